-- A state store written by nbdxm schema version 1 (the first released schema), with rows of every table: the
-- upgrade test (tests/core/store_init_test.cpp, tests/manager/cli_store_init_test.cpp) loads it and runs init.
-- Made once with `sqlite3 store.db < (version 1 section of schema.sql)`, the INSERTs below, and `sqlite3 store.db
-- .dump`, plus the user_version line at the end (.dump omits it). Never regenerate it from a later schema.sql: it
-- stands for stores already on appliances.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE replication_jobs (
    id             TEXT PRIMARY KEY NOT NULL
                   CONSTRAINT job_id_format CHECK (length(id) BETWEEN 1 AND 191),
    source_vm_id   TEXT NOT NULL,
    source_vm_name TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'pending'
                   CONSTRAINT job_status_valid
                   CHECK (status IN ('pending', 'replicating', 'completed', 'failed', 'cancelled')),
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
INSERT INTO replication_jobs VALUES('job-20250821-web01','vm-4211','web01','replicating','2025-08-21T09:00:00.000Z','2025-08-21T09:05:00.000Z');
INSERT INTO replication_jobs VALUES('job-20250821-db01','vm-4212','db01','pending','2025-08-21T09:10:00.000Z','2025-08-21T09:10:00.000Z');
CREATE TABLE device_mappings (
    -- The volume daemon picks its own ids; rows created without one get a random UUID.
    id                          TEXT PRIMARY KEY NOT NULL
                                DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4'
                                    || substr(hex(randomblob(2)), 2) || '-'
                                    || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2)
                                    || '-' || hex(randomblob(6))))
                                CONSTRAINT mapping_id_format CHECK (length(id) BETWEEN 1 AND 64),
    volume_uuid                 TEXT NOT NULL UNIQUE
                                CONSTRAINT volume_uuid_canonical CHECK (volume_uuid GLOB
                                    '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-'
                                    || '[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-'
                                    || '[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-'
                                    || '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
                                    || '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'),
    volume_id                   INTEGER NOT NULL CONSTRAINT volume_id_range CHECK (volume_id >= 0),
    vm_id                       TEXT NOT NULL CONSTRAINT mapping_vm_id_format CHECK (length(vm_id) BETWEEN 1 AND 64),
    -- FIX 4: device_path is unique among 'oma' mappings only (partial index below): 'failover' rows hold
    -- placeholder paths for volumes attached to another VM, and several may share one placeholder. Placeholders
    -- are the volume daemon's to choose, so only an 'oma' path must be a device path (constraint below).
    device_path                 TEXT NOT NULL
                                CONSTRAINT device_path_length CHECK (length(device_path) BETWEEN 1 AND 255),
    operation_mode              TEXT NOT NULL DEFAULT 'oma'
                                CONSTRAINT operation_mode_valid CHECK (operation_mode IN ('oma', 'failover')),
    cloudstack_device_id        INTEGER,
    requires_device_correlation INTEGER NOT NULL DEFAULT 1
                                CONSTRAINT requires_device_correlation_bool
                                CHECK (requires_device_correlation IN (0, 1)),
    cloudstack_state            TEXT NOT NULL DEFAULT 'attached',
    linux_state                 TEXT NOT NULL DEFAULT 'detected',
    -- Size in bytes of the attached volume; the plugin refuses a device whose size differs.
    size                        INTEGER NOT NULL
                                CONSTRAINT mapping_size_range CHECK (size > 0 AND size <= 1125899906842624),
    last_sync                   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    created_at                  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at                  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- An 'oma' device path is absolute and normalized (no empty, '.' or '..' component, no trailing slash): the
    -- uniqueness of 'oma' paths would mean nothing if /dev/vdc could be mapped again as /dev//vdc or /dev/./vdc.
    CONSTRAINT oma_device_path_normalized
    CHECK (operation_mode <> 'oma'
           OR (length(device_path) >= 2 AND substr(device_path, 1, 1) = '/' AND device_path NOT GLOB '*/'
               AND device_path NOT GLOB '*//*' AND device_path NOT GLOB '*/./*' AND device_path NOT GLOB '*/.'
               AND device_path NOT GLOB '*/../*' AND device_path NOT GLOB '*/..'))
) STRICT;
INSERT INTO device_mappings VALUES('dm-0001','b3bb9310-1b59-4f62-97e8-cefffdfe3804',2301,'appliance-1','/dev/vdb','oma',1,1,'attached','detected',112742891520,'2025-08-21T09:01:00.000Z','2025-08-21T09:01:00.000Z','2025-08-21T09:01:00.000Z');
INSERT INTO device_mappings VALUES('dm-0002','7d1c2e9a-0c4b-4d7e-9a51-3f2e1b0c9d8a',2302,'appliance-1','/dev/vdc','oma',2,1,'attached','detected',59055800320,'2025-08-21T09:02:00.000Z','2025-08-21T09:02:00.000Z','2025-08-21T09:02:00.000Z');
INSERT INTO device_mappings VALUES('dm-0003','0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f',2303,'vm-4299','remote-vm','failover',NULL,0,'attached','unknown',21474836480,'2025-08-21T09:03:00.000Z','2025-08-21T09:03:00.000Z','2025-08-21T09:03:00.000Z');
CREATE TABLE vm_disks (
    -- AUTOINCREMENT: a disk id is never reused, so nothing that names an old disk can reach a new one.
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id                 TEXT NOT NULL REFERENCES replication_jobs (id) ON DELETE CASCADE,
    disk_id                TEXT NOT NULL CONSTRAINT disk_id_format CHECK (length(disk_id) BETWEEN 1 AND 191),
    vm_dk_path             TEXT NOT NULL,
    size_gb                INTEGER NOT NULL CONSTRAINT disk_size_range CHECK (size_gb > 0 AND size_gb <= 1048576),
    unit_number            INTEGER CONSTRAINT unit_number_range CHECK (unit_number IS NULL OR unit_number >= 0),
    -- FIX 1: the design document pointed this at device_mappings(volume_id), a numeric id that is not a key.
    -- It references the UUID, the single source of truth; deleting the mapping unlinks the disk.
    -- UNIQUE: a volume backs at most one vm_disk.
    cloudstack_volume_uuid TEXT UNIQUE REFERENCES device_mappings (volume_uuid) ON DELETE SET NULL,
    cloudstack_volume_id   INTEGER,
    sync_status            TEXT NOT NULL DEFAULT 'pending'
                           CONSTRAINT sync_status_valid
                           CHECK (sync_status IN ('pending', 'syncing', 'completed', 'failed', 'cancelled')),
    sync_progress_percent  REAL NOT NULL DEFAULT 0
                           CONSTRAINT sync_progress_range CHECK (sync_progress_percent BETWEEN 0 AND 100),
    bytes_synced           INTEGER NOT NULL DEFAULT 0 CONSTRAINT bytes_synced_range CHECK (bytes_synced >= 0),
    created_at             TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at             TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT unique_job_disk UNIQUE (job_id, disk_id)
) STRICT;
INSERT INTO vm_disks VALUES(1,'job-20250821-web01','disk-2000','[datastore1] web01/web01.vmdk',100,0,'b3bb9310-1b59-4f62-97e8-cefffdfe3804',2301,'syncing',42.5,45634027520,'2025-08-21T09:00:30.000Z','2025-08-21T09:05:00.000Z');
INSERT INTO vm_disks VALUES(2,'job-20250821-web01','disk-2001','[datastore1] web01/web01_1.vmdk',50,1,'7d1c2e9a-0c4b-4d7e-9a51-3f2e1b0c9d8a',2302,'pending',0.0,0,'2025-08-21T09:00:30.000Z','2025-08-21T09:00:30.000Z');
INSERT INTO vm_disks VALUES(3,'job-20250821-db01','disk-2000','[datastore2] db01/db01.vmdk',20,0,NULL,NULL,'pending',0.0,0,'2025-08-21T09:10:30.000Z','2025-08-21T09:10:30.000Z');
CREATE TABLE nbd_exports (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id            TEXT NOT NULL REFERENCES replication_jobs (id) ON DELETE CASCADE,
    vm_disk_id        INTEGER NOT NULL REFERENCES vm_disks (id) ON DELETE CASCADE,
    -- FIX 2: the design document pointed this column, named *_id, at device_mappings(volume_uuid).
    -- It references the mapping's id; deleting the mapping deletes its exports.
    device_mapping_id TEXT NOT NULL REFERENCES device_mappings (id) ON DELETE CASCADE,
    export_name       TEXT NOT NULL UNIQUE
                      CONSTRAINT export_name_format
                      CHECK (length(export_name) BETWEEN 1 AND 191 AND export_name GLOB '[A-Za-z0-9]*'
                             AND export_name NOT GLOB '*[^A-Za-z0-9._-]*'),
    port              INTEGER NOT NULL CONSTRAINT port_range CHECK (port BETWEEN 1 AND 65535),
    -- FIX 3: no device_path and no config_path columns. A stored copy of the device path is what drifted; the
    -- device is resolved through device_mappings every time (view export_devices).
    status            TEXT NOT NULL DEFAULT 'pending'
                      CONSTRAINT export_status_valid CHECK (status IN ('pending', 'active', 'revoked', 'failed')),
    -- Added (nullable): why the export was revoked or failed, in words, for `nbdxm export show`.
    status_reason     TEXT,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
INSERT INTO nbd_exports VALUES(1,'job-20250821-web01',1,'dm-0001','migration-vol-b3bb9310-1b59-4f62-97e8-cefffdfe3804-old',10809,'revoked','replaced by a new export','2025-08-21T09:01:30.000Z','2025-08-21T09:02:30.000Z');
INSERT INTO nbd_exports VALUES(2,'job-20250821-web01',1,'dm-0001','migration-vol-b3bb9310-1b59-4f62-97e8-cefffdfe3804',10809,'active',NULL,'2025-08-21T09:02:30.000Z','2025-08-21T09:03:00.000Z');
INSERT INTO nbd_exports VALUES(3,'job-20250821-web01',2,'dm-0002','migration-vol-7d1c2e9a-0c4b-4d7e-9a51-3f2e1b0c9d8a',10810,'pending',NULL,'2025-08-21T09:02:40.000Z','2025-08-21T09:02:40.000Z');
CREATE TABLE volume_operations (
    id           TEXT PRIMARY KEY NOT NULL CONSTRAINT operation_id_format CHECK (length(id) BETWEEN 1 AND 64),
    type         TEXT NOT NULL
                 CONSTRAINT operation_type_valid CHECK (type IN ('create', 'attach', 'detach', 'delete', 'cleanup')),
    status       TEXT NOT NULL DEFAULT 'pending'
                 CONSTRAINT operation_status_valid
                 CHECK (status IN ('pending', 'executing', 'completed', 'failed', 'cancelled')),
    volume_id    TEXT NOT NULL,
    vm_id        TEXT,
    request      TEXT NOT NULL DEFAULT '{}' CONSTRAINT operation_request_json CHECK (json_valid(request)),
    response     TEXT CONSTRAINT operation_response_json CHECK (response IS NULL OR json_valid(response)),
    error        TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    completed_at TEXT
) STRICT;
INSERT INTO volume_operations VALUES('op-0001','attach','completed','b3bb9310-1b59-4f62-97e8-cefffdfe3804','appliance-1','{"volume_id":"b3bb9310-1b59-4f62-97e8-cefffdfe3804","vm_id":"appliance-1"}','{"device_path":"/dev/vdb"}',NULL,'2025-08-21T09:00:40.000Z','2025-08-21T09:01:00.000Z','2025-08-21T09:01:00.000Z');
INSERT INTO volume_operations VALUES('op-0002','detach','failed','0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f','vm-4299','{}',NULL,'volume is attached to another VM','2025-08-21T09:03:10.000Z','2025-08-21T09:03:20.000Z',NULL);
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('vm_disks',3);
INSERT INTO sqlite_sequence VALUES('nbd_exports',3);
CREATE INDEX idx_replication_jobs_status ON replication_jobs (status);
CREATE UNIQUE INDEX idx_device_mappings_oma_device_path ON device_mappings (device_path)
    WHERE operation_mode = 'oma';
CREATE INDEX idx_device_mappings_vm_id ON device_mappings (vm_id);
CREATE INDEX idx_device_mappings_volume_id ON device_mappings (volume_id);
CREATE INDEX idx_device_mappings_last_sync ON device_mappings (last_sync);
CREATE INDEX idx_vm_disks_job_id ON vm_disks (job_id);
CREATE UNIQUE INDEX idx_nbd_exports_live_port ON nbd_exports (port) WHERE status IN ('pending', 'active');
CREATE UNIQUE INDEX idx_nbd_exports_live_disk ON nbd_exports (vm_disk_id) WHERE status IN ('pending', 'active');
CREATE UNIQUE INDEX idx_nbd_exports_live_mapping ON nbd_exports (device_mapping_id)
    WHERE status IN ('pending', 'active');
CREATE INDEX idx_nbd_exports_job_id ON nbd_exports (job_id);
CREATE INDEX idx_nbd_exports_vm_disk_id ON nbd_exports (vm_disk_id);
CREATE INDEX idx_nbd_exports_device_mapping_id ON nbd_exports (device_mapping_id);
CREATE INDEX idx_nbd_exports_status ON nbd_exports (status);
CREATE INDEX idx_volume_operations_volume_id ON volume_operations (volume_id);
CREATE INDEX idx_volume_operations_status ON volume_operations (status);
CREATE VIEW export_devices AS
SELECT e.id AS export_id, e.export_name, e.port, e.status, e.status_reason, e.job_id, e.vm_disk_id,
       d.disk_id, m.id AS device_mapping_id, m.volume_uuid, m.device_path, m.operation_mode,
       m.requires_device_correlation, m.size, e.created_at, e.updated_at
FROM nbd_exports e
JOIN device_mappings m ON m.id = e.device_mapping_id
JOIN vm_disks d ON d.id = e.vm_disk_id;
CREATE TRIGGER nbd_exports_job_matches_disk_insert BEFORE INSERT ON nbd_exports
WHEN EXISTS (SELECT 1 FROM vm_disks WHERE id = NEW.vm_disk_id AND job_id IS NOT NEW.job_id)
BEGIN
    SELECT RAISE(ABORT, 'an export must belong to the same job as its vm_disk');
END;
CREATE TRIGGER nbd_exports_job_matches_disk_update BEFORE UPDATE OF job_id, vm_disk_id ON nbd_exports
WHEN EXISTS (SELECT 1 FROM vm_disks WHERE id = NEW.vm_disk_id AND job_id IS NOT NEW.job_id)
BEGIN
    SELECT RAISE(ABORT, 'an export must belong to the same job as its vm_disk');
END;
CREATE TRIGGER nbd_exports_live_insert BEFORE INSERT ON nbd_exports
WHEN NEW.status IN ('pending', 'active')
BEGIN
    SELECT RAISE(ABORT, 'the vm_disk has no linked volume; link one with `nbdxm disk link` before exporting it')
    WHERE EXISTS (SELECT 1 FROM vm_disks WHERE id = NEW.vm_disk_id AND cloudstack_volume_uuid IS NULL);
    SELECT RAISE(ABORT, 'the export''s device mapping is not the volume its vm_disk is linked to')
    WHERE EXISTS (SELECT 1 FROM vm_disks d, device_mappings m
                  WHERE d.id = NEW.vm_disk_id AND m.id = NEW.device_mapping_id
                    AND d.cloudstack_volume_uuid IS NOT m.volume_uuid);
    SELECT RAISE(ABORT, 'the volume is in failover mode (attached to another VM); only ''oma'' volumes can be exported')
    WHERE EXISTS (SELECT 1 FROM device_mappings WHERE id = NEW.device_mapping_id AND operation_mode <> 'oma');
    SELECT RAISE(ABORT, 'the job has ended (completed, failed or cancelled); a live export needs a running job')
    WHERE EXISTS (SELECT 1 FROM replication_jobs WHERE id = NEW.job_id
                  AND status IN ('completed', 'failed', 'cancelled'));
END;
CREATE TRIGGER nbd_exports_live_update
BEFORE UPDATE OF status, job_id, vm_disk_id, device_mapping_id ON nbd_exports
WHEN NEW.status IN ('pending', 'active')
BEGIN
    SELECT RAISE(ABORT, 'the vm_disk has no linked volume; link one with `nbdxm disk link` before exporting it')
    WHERE EXISTS (SELECT 1 FROM vm_disks WHERE id = NEW.vm_disk_id AND cloudstack_volume_uuid IS NULL);
    SELECT RAISE(ABORT, 'the export''s device mapping is not the volume its vm_disk is linked to')
    WHERE EXISTS (SELECT 1 FROM vm_disks d, device_mappings m
                  WHERE d.id = NEW.vm_disk_id AND m.id = NEW.device_mapping_id
                    AND d.cloudstack_volume_uuid IS NOT m.volume_uuid);
    SELECT RAISE(ABORT, 'the volume is in failover mode (attached to another VM); only ''oma'' volumes can be exported')
    WHERE EXISTS (SELECT 1 FROM device_mappings WHERE id = NEW.device_mapping_id AND operation_mode <> 'oma');
    SELECT RAISE(ABORT, 'the job has ended (completed, failed or cancelled); a live export needs a running job')
    WHERE EXISTS (SELECT 1 FROM replication_jobs WHERE id = NEW.job_id
                  AND status IN ('completed', 'failed', 'cancelled'));
END;
CREATE TRIGGER vm_disks_volume_fits_insert BEFORE INSERT ON vm_disks
WHEN NEW.cloudstack_volume_uuid IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'the volume is smaller than the disk; link a volume at least as large as the disk')
    WHERE EXISTS (SELECT 1 FROM device_mappings WHERE volume_uuid = NEW.cloudstack_volume_uuid
                  AND size < NEW.size_gb * 1073741824);
END;
CREATE TRIGGER vm_disks_volume_fits_update BEFORE UPDATE OF cloudstack_volume_uuid, size_gb ON vm_disks
WHEN NEW.cloudstack_volume_uuid IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'the volume is smaller than the disk; link a volume at least as large as the disk')
    WHERE EXISTS (SELECT 1 FROM device_mappings WHERE volume_uuid = NEW.cloudstack_volume_uuid
                  AND size < NEW.size_gb * 1073741824);
END;
CREATE TRIGGER device_mappings_size_fits_disk BEFORE UPDATE OF size ON device_mappings
BEGIN
    SELECT RAISE(ABORT, 'the volume would become smaller than the disk linked to it')
    WHERE EXISTS (SELECT 1 FROM vm_disks WHERE cloudstack_volume_uuid = NEW.volume_uuid
                  AND NEW.size < size_gb * 1073741824);
END;
CREATE TRIGGER vm_disks_job_fixed_while_exported BEFORE UPDATE OF job_id ON vm_disks
WHEN NEW.job_id IS NOT OLD.job_id AND EXISTS (SELECT 1 FROM nbd_exports WHERE vm_disk_id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'a vm_disk with exports cannot move to another job');
END;
CREATE TRIGGER replication_jobs_end_revokes_exports AFTER UPDATE OF status ON replication_jobs
WHEN NEW.status IN ('completed', 'failed', 'cancelled') AND OLD.status NOT IN ('completed', 'failed', 'cancelled')
BEGIN
    UPDATE nbd_exports SET status = 'revoked', status_reason = 'job ' || NEW.id || ' became ' || NEW.status
    WHERE job_id = NEW.id AND status IN ('pending', 'active');
END;
CREATE TRIGGER vm_disks_relink_revokes_exports AFTER UPDATE OF cloudstack_volume_uuid ON vm_disks
WHEN OLD.cloudstack_volume_uuid IS NOT NEW.cloudstack_volume_uuid
BEGIN
    UPDATE nbd_exports SET status = 'revoked',
        status_reason = 'disk ' || NEW.disk_id || ' was ' ||
            CASE WHEN NEW.cloudstack_volume_uuid IS NULL THEN 'unlinked from its volume'
                 ELSE 'linked to another volume' END
    WHERE vm_disk_id = NEW.id AND status IN ('pending', 'active');
END;
CREATE TRIGGER device_mappings_failover_revokes_exports AFTER UPDATE OF operation_mode ON device_mappings
WHEN NEW.operation_mode <> 'oma'
BEGIN
    UPDATE nbd_exports SET status = 'revoked',
        status_reason = 'volume ' || NEW.volume_uuid || ' moved to ' || NEW.operation_mode || ' mode'
    WHERE device_mapping_id = NEW.id AND status IN ('pending', 'active');
END;
CREATE TRIGGER replication_jobs_touch AFTER UPDATE ON replication_jobs
BEGIN
    UPDATE replication_jobs SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE id = NEW.id AND updated_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now');
END;
CREATE TRIGGER device_mappings_touch AFTER UPDATE ON device_mappings
BEGIN
    UPDATE device_mappings SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE id = NEW.id AND updated_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now');
END;
CREATE TRIGGER vm_disks_touch AFTER UPDATE ON vm_disks
BEGIN
    UPDATE vm_disks SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE id = NEW.id AND updated_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now');
END;
CREATE TRIGGER nbd_exports_touch AFTER UPDATE ON nbd_exports
BEGIN
    UPDATE nbd_exports SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE id = NEW.id AND updated_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now');
END;
CREATE TRIGGER volume_operations_touch AFTER UPDATE ON volume_operations
BEGIN
    UPDATE volume_operations SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE id = NEW.id AND updated_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now');
END;
COMMIT;
PRAGMA user_version = 1;
