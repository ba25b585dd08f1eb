-- The previous generation's tables that `nbdxm import legacy` reads, as in the MariaDB dump of migratekit_oma
-- (DRDAVIDBANNER/sendense, oma-deployment-package/database/production-schema.sql; volume_operations as in that dump
-- too): the columns the import reads and every NOT NULL column, with the dump's names, types,
-- defaults and keys. Columns that refer to tables the import does not read (vm_context_id, ossea_config_id, ...) are
-- kept, their foreign keys to those tables are not. vm_disks.job_id is nullable, as it became on appliances late in
-- their life (rows without a job exist). Written for the tests; loaded with foreign key checks off, as
-- the dump loads.
SET FOREIGN_KEY_CHECKS = 0;

CREATE TABLE `replication_jobs` (
  `id` varchar(191) NOT NULL,
  `vm_context_id` varchar(64) DEFAULT NULL,
  `source_vm_id` longtext NOT NULL,
  `source_vm_name` longtext NOT NULL,
  `source_vm_path` longtext NOT NULL,
  `v_center_host` longtext NOT NULL,
  `datacenter` longtext NOT NULL,
  `replication_type` longtext NOT NULL,
  `target_network` longtext DEFAULT NULL,
  `status` varchar(191) DEFAULT 'pending',
  `progress_percent` double DEFAULT 0,
  `current_operation` longtext DEFAULT NULL,
  `bytes_transferred` bigint(20) DEFAULT 0,
  `total_bytes` bigint(20) DEFAULT 0,
  `error_message` longtext DEFAULT NULL,
  `change_id` longtext DEFAULT NULL,
  `nbd_port` bigint(20) DEFAULT NULL,
  `nbd_export_name` longtext DEFAULT NULL,
  `target_device` longtext DEFAULT NULL,
  `ossea_config_id` bigint(20) DEFAULT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  `started_at` datetime(3) DEFAULT NULL,
  `completed_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_replication_jobs_progress_timeout` (`status`,`updated_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `ossea_volumes` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `vm_context_id` varchar(64) DEFAULT NULL,
  `volume_id` longtext NOT NULL,
  `volume_name` longtext NOT NULL,
  `size_gb` bigint(20) NOT NULL,
  `ossea_config_id` bigint(20) DEFAULT NULL,
  `volume_type` longtext DEFAULT NULL,
  `device_path` longtext DEFAULT NULL,
  `mount_point` longtext DEFAULT NULL,
  `status` varchar(191) DEFAULT 'creating',
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `idx_ossea_volumes_volume_id` (`volume_id`) USING HASH
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `vm_disks` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `vm_context_id` varchar(64) DEFAULT NULL,
  `job_id` varchar(191) DEFAULT NULL,
  `disk_id` longtext NOT NULL,
  `vm_dk_path` longtext NOT NULL,
  `size_gb` bigint(20) NOT NULL,
  `datastore` longtext DEFAULT NULL,
  `unit_number` bigint(20) DEFAULT NULL,
  `label` longtext DEFAULT NULL,
  `capacity_bytes` bigint(20) DEFAULT NULL,
  `provisioning_type` longtext DEFAULT NULL,
  `ossea_volume_id` bigint(20) DEFAULT NULL,
  `disk_change_id` longtext DEFAULT NULL,
  `sync_status` varchar(191) DEFAULT 'pending',
  `sync_progress_percent` double DEFAULT 0,
  `bytes_synced` bigint(20) DEFAULT 0,
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `fk_vm_disks_job` (`job_id`),
  KEY `idx_vm_disks_ossea_volume` (`ossea_volume_id`),
  CONSTRAINT `fk_vm_disks_job` FOREIGN KEY (`job_id`) REFERENCES `replication_jobs` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `device_mappings` (
  `id` varchar(64) NOT NULL DEFAULT uuid(),
  `vm_context_id` varchar(64) DEFAULT NULL,
  `volume_uuid` varchar(64) NOT NULL,
  `volume_id_numeric` bigint(20) DEFAULT NULL,
  `vm_id` varchar(64) NOT NULL,
  `operation_mode` enum('oma','failover') DEFAULT 'oma',
  `cloudstack_device_id` int(11) DEFAULT NULL,
  `requires_device_correlation` tinyint(1) DEFAULT 1,
  `device_path` varchar(255) NOT NULL,
  `cloudstack_state` varchar(32) NOT NULL,
  `linux_state` varchar(32) NOT NULL,
  `size` bigint(20) NOT NULL,
  `last_sync` timestamp NULL DEFAULT current_timestamp(),
  `created_at` timestamp NULL DEFAULT current_timestamp(),
  `updated_at` timestamp NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  `persistent_device_name` varchar(255) DEFAULT NULL,
  `symlink_path` varchar(255) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `unique_volume_id` (`volume_uuid`),
  UNIQUE KEY `unique_device_path` (`device_path`),
  KEY `idx_device_mappings_vm_id` (`vm_id`),
  KEY `idx_device_mappings_volume_id` (`volume_id_numeric`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `nbd_exports` (
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `vm_context_id` varchar(64) DEFAULT NULL,
  `job_id` varchar(191) DEFAULT NULL,
  `volume_id` varchar(64) DEFAULT '',
  `vm_disk_id` bigint(20) DEFAULT NULL,
  `device_mapping_uuid` varchar(64) DEFAULT NULL,
  `export_name` varchar(191) NOT NULL,
  `port` bigint(20) NOT NULL,
  `device_path` longtext NOT NULL,
  `config_path` longtext DEFAULT '',
  `status` varchar(191) NOT NULL DEFAULT 'pending',
  `created_at` datetime(3) DEFAULT NULL,
  `updated_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `uni_nbd_exports_export_name` (`export_name`),
  KEY `idx_nbd_exports_job_id` (`job_id`),
  KEY `fk_nbd_vm_disk` (`vm_disk_id`),
  KEY `fk_nbd_device` (`device_mapping_uuid`),
  CONSTRAINT `fk_nbd_device` FOREIGN KEY (`device_mapping_uuid`) REFERENCES `device_mappings` (`volume_uuid`) ON DELETE CASCADE,
  CONSTRAINT `fk_nbd_job` FOREIGN KEY (`job_id`) REFERENCES `replication_jobs` (`id`) ON DELETE CASCADE,
  CONSTRAINT `fk_nbd_vm_disk` FOREIGN KEY (`vm_disk_id`) REFERENCES `vm_disks` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `volume_operations` (
  `id` varchar(64) NOT NULL,
  `type` enum('create','attach','detach','delete','cleanup') NOT NULL,
  `status` enum('pending','executing','completed','failed','cancelled') NOT NULL DEFAULT 'pending',
  `volume_id` varchar(64) NOT NULL,
  `vm_id` varchar(64) DEFAULT NULL,
  `request` longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL CHECK (json_valid(`request`)),
  `response` longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL CHECK (json_valid(`response`)),
  `error` text DEFAULT NULL,
  `created_at` timestamp NULL DEFAULT current_timestamp(),
  `updated_at` timestamp NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  `completed_at` timestamp NULL DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_volume_operations_volume_id` (`volume_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

SET FOREIGN_KEY_CHECKS = 1;
