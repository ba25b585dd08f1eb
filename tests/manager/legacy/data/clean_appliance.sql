-- A clean appliance of the previous generation: every link holds, every UUID is canonical, every status is one
-- the store knows. Imports with no repair and no rejection.
SET FOREIGN_KEY_CHECKS = 0;
INSERT INTO replication_jobs (id, source_vm_id, source_vm_name, source_vm_path, v_center_host, datacenter,
                              replication_type, status, created_at, updated_at) VALUES
  ('job-clean-1', 'vm-101', 'web01', '/DC1/vm/web01', 'vcenter.example', 'DC1', 'initial', 'replicating',
   '2025-09-01 10:00:00.000', '2025-09-01 10:05:00.000'),
  ('job-clean-2', 'vm-102', 'db01', '/DC1/vm/db01', 'vcenter.example', 'DC1', 'incremental', 'completed',
   '2025-09-02 11:00:00.000', '2025-09-02 12:00:00.000');
INSERT INTO ossea_volumes (id, volume_id, volume_name, size_gb, status, created_at) VALUES
  (1, '11111111-1111-4111-8111-111111111111', 'web01-disk0', 15, 'attached', '2025-09-01 10:01:00.000'),
  (2, '22222222-2222-4222-8222-222222222222', 'web01-disk1', 25, 'attached', '2025-09-01 10:01:00.000'),
  (3, '33333333-3333-4333-8333-333333333333', 'db01-disk0', 45, 'attached', '2025-09-02 11:01:00.000');
INSERT INTO device_mappings (id, volume_uuid, volume_id_numeric, vm_id, operation_mode, cloudstack_device_id,
                             requires_device_correlation, device_path, cloudstack_state, linux_state, size,
                             last_sync, created_at, updated_at) VALUES
  ('map-1', '11111111-1111-4111-8111-111111111111', 501, 'oma-vm-1', 'oma', 1, 1, '/dev/vdb', 'attached',
   'detected', 16106127360, '2025-09-01 10:02:00', '2025-09-01 10:02:00', '2025-09-01 10:02:00'),
  ('map-2', '22222222-2222-4222-8222-222222222222', 502, 'oma-vm-1', 'oma', 2, 1, '/dev/vdc', 'attached',
   'detected', 26843545600, '2025-09-01 10:02:00', '2025-09-01 10:02:00', '2025-09-01 10:02:00'),
  ('map-3', '33333333-3333-4333-8333-333333333333', 503, 'oma-vm-1', 'oma', 3, 1, '/dev/vdd', 'attached',
   'detected', 48318382080, '2025-09-02 11:02:00', '2025-09-02 11:02:00', '2025-09-02 11:02:00');
INSERT INTO vm_disks (id, job_id, disk_id, vm_dk_path, size_gb, unit_number, capacity_bytes, ossea_volume_id,
                      sync_status, sync_progress_percent, bytes_synced, created_at, updated_at) VALUES
  (1, 'job-clean-1', 'disk-2000', '[ds1] web01/web01.vmdk', 10, 0, 10737418240, 1, 'syncing', 40, 4294967296,
   '2025-09-01 10:00:30.000', '2025-09-01 10:05:00.000'),
  (2, 'job-clean-1', 'disk-2001', '[ds1] web01/web01_1.vmdk', 20, 1, 21474836480, 2, 'pending', 0, 0,
   '2025-09-01 10:00:30.000', '2025-09-01 10:05:00.000'),
  (3, 'job-clean-2', 'disk-2000', '[ds2] db01/db01.vmdk', 40, 0, 42949672960, 3, 'completed', 100, 42949672960,
   '2025-09-02 11:00:30.000', '2025-09-02 12:00:00.000');
INSERT INTO nbd_exports (id, job_id, volume_id, vm_disk_id, device_mapping_uuid, export_name, port, device_path,
                         status, created_at, updated_at) VALUES
  (1, 'job-clean-1', '11111111-1111-4111-8111-111111111111', 1, '11111111-1111-4111-8111-111111111111',
   'migration-vol-11111111-1111-4111-8111-111111111111', 10809, '/dev/vdb', 'active', '2025-09-01 10:03:00.000',
   '2025-09-01 10:03:00.000'),
  (2, 'job-clean-1', '22222222-2222-4222-8222-222222222222', 2, '22222222-2222-4222-8222-222222222222',
   'migration-vol-22222222-2222-4222-8222-222222222222', 10809, '/dev/vdc', 'active', '2025-09-01 10:03:00.000',
   '2025-09-01 10:03:00.000'),
  (3, 'job-clean-2', '33333333-3333-4333-8333-333333333333', 3, '33333333-3333-4333-8333-333333333333',
   'migration-vol-33333333-3333-4333-8333-333333333333', 10809, '/dev/vdd', 'stopped', '2025-09-02 11:03:00.000',
   '2025-09-02 12:00:00.000');
INSERT INTO volume_operations (id, type, status, volume_id, vm_id, request, response, created_at, updated_at,
                               completed_at) VALUES
  ('op-1', 'create', 'completed', '11111111-1111-4111-8111-111111111111', NULL, '{"size_gb": 15}', '{}',
   '2025-09-01 10:00:40', '2025-09-01 10:00:50', '2025-09-01 10:00:50'),
  ('op-2', 'attach', 'completed', '11111111-1111-4111-8111-111111111111', 'oma-vm-1', '{}', '{"device": "/dev/vdb"}',
   '2025-09-01 10:01:40', '2025-09-01 10:01:50', '2025-09-01 10:01:50');
SET FOREIGN_KEY_CHECKS = 1;
