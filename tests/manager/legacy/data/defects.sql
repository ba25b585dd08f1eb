-- An appliance of the previous generation with each defect the import must handle. The comment on each row says
-- the outcome the test expects (legacy_import_test.cpp checks every one). Device path uniqueness is dropped first:
-- the tables once had no such key, and failover placeholders need to share a path.
SET FOREIGN_KEY_CHECKS = 0;
ALTER TABLE device_mappings DROP INDEX unique_device_path;

INSERT INTO replication_jobs (id, source_vm_id, source_vm_name, source_vm_path, v_center_host, datacenter,
                              replication_type, status, created_at) VALUES
  ('job-ok', 'vm-201', 'app01', '/DC1/vm/app01', 'vc', 'DC1', 'initial', 'replicating', '2025-10-01 08:00:00'),  -- imported
  ('job-running', 'vm-202', 'app02', '/DC1/vm/app02', 'vc', 'DC1', 'initial', 'Running', '2025-10-01 08:00:00'),  -- repaired: status
  ('job-null', 'vm-203', 'app03', '/DC1/vm/app03', 'vc', 'DC1', 'initial', NULL, '2025-10-01 08:00:00'),  -- repaired: status
  ('job-paused', 'vm-204', 'app04', '/DC1/vm/app04', 'vc', 'DC1', 'initial', 'paused-by-operator', NULL),  -- rejected
  ('job-old', 'vm-201', 'app01', '/DC1/vm/app01', 'vc', 'DC1', 'initial', 'completed', '2025-09-01 08:00:00');  -- imported

INSERT INTO ossea_volumes (id, volume_id, volume_name, size_gb) VALUES
  (1, 'aaaaaaaa-0000-4000-8000-000000000001', 'v1', 20),
  (2, 'AAAAAAAA-0000-4000-8000-000000000002', 'v2', 20),
  (3, 'PLACEHOLDER', 'v3', 20),
  (4, 'aaaaaaaa-0000-4000-8000-00000000000a', 'v10', 5),
  (5, 'aaaaaaaa-0000-4000-8000-00000000000b', 'v11', 50),
  (6, 'aaaaaaaa-0000-4000-8000-00000000000c', 'v12', 30),
  (7, 'aaaaaaaa-0000-4000-8000-000000000005', 'v5', 20),
  (8, 'aaaaaaaa-0000-4000-8000-000000000008', 'v8', 20);

INSERT INTO device_mappings (id, volume_uuid, volume_id_numeric, vm_id, operation_mode, device_path,
                             cloudstack_state, linux_state, size, last_sync) VALUES
  ('map-u1', 'aaaaaaaa-0000-4000-8000-000000000001', 601, 'oma-1', 'oma', '/dev/vdb', 'attached', 'detected',
   21474836480, '2025-10-01 08:00:00'),  -- imported
  ('map-u2', 'AAAAAAAA-0000-4000-8000-000000000002', 602, 'oma-1', 'oma', '/dev/vdc', 'attached', 'detected',
   21474836480, '2025-10-01 08:00:00'),  -- repaired: UUID lower-cased
  ('map-u3', 'pending-volume', 603, 'oma-1', 'oma', '/dev/vde', 'attached', 'detected',
   21474836480, '2025-10-01 08:00:00'),  -- rejected: not a UUID
  ('map-u4', 'aaaaaaaa-0000-4000-8000-000000000004', 604, 'oma-1', 'oma', '/dev/vdd', 'attached', 'detected',
   21474836480, '2025-01-01 08:00:00'),  -- rejected: second oma mapping of /dev/vdd (older)
  ('map-u5', 'aaaaaaaa-0000-4000-8000-000000000005', 605, 'oma-1', 'oma', '/dev/vdd', 'attached', 'detected',
   21474836480, '2025-06-01 08:00:00'),  -- imported: the later oma mapping of /dev/vdd
  ('map-u6', 'aaaaaaaa-0000-4000-8000-000000000006', 606, 'target-1', 'failover', 'failover-placeholder',
   'attached', 'detected', 21474836480, '2025-10-01 08:00:00'),  -- imported
  ('map-u7', 'aaaaaaaa-0000-4000-8000-000000000007', 607, 'target-2', 'failover', 'failover-placeholder',
   'attached', 'detected', 21474836480, '2025-10-01 08:00:00'),  -- imported: failover placeholders may repeat
  ('map-u8', 'aaaaaaaa-0000-4000-8000-000000000008', NULL, 'oma-1', 'oma', '/dev/vdf', 'attached', 'detected',
   21474836480, '2025-10-01 08:00:00'),  -- repaired: no numeric id
  ('map-u9', 'aaaaaaaa-0000-4000-8000-000000000009', 609, 'oma-1', 'oma', '/dev/vdg', 'attached', 'detected',
   0, '2025-10-01 08:00:00'),  -- rejected: size 0
  ('map-u10', 'aaaaaaaa-0000-4000-8000-00000000000a', 610, 'oma-1', 'oma', '/dev/vdh', 'attached', 'detected',
   5368709120, '2025-10-01 08:00:00'),  -- imported (5 GiB)
  ('map-u11', 'aaaaaaaa-0000-4000-8000-00000000000b', 611, 'oma-1', 'oma', '/dev/vdi', 'attached', 'detected',
   53687091200, '2025-10-01 08:00:00');  -- imported

INSERT INTO vm_disks (id, job_id, disk_id, vm_dk_path, size_gb, capacity_bytes, ossea_volume_id, sync_status) VALUES
  (1, 'job-ok', 'disk-2000', '[ds] app01.vmdk', 10, NULL, 1, 'syncing'),  -- imported
  (2, 'job-gone', 'disk-2000', '[ds] gone.vmdk', 10, NULL, NULL, 'pending'),  -- rejected: job does not exist
  (3, NULL, 'disk-2001', '[ds] nojob.vmdk', 10, NULL, NULL, 'pending'),  -- rejected: no job
  (4, 'job-running', 'disk-2000', '[ds] app02.vmdk', 10, NULL, 2, 'pending'),  -- repaired: UUID lower-cased
  (5, 'job-running', 'disk-2001', '[ds] app02_1.vmdk', 10, NULL, 3, 'pending'),  -- rejected: volume not a UUID
  (6, 'job-null', 'disk-2000', '[ds] app03.vmdk', 102, NULL, 4, 'pending'),  -- rejected: 102 GB into 5 GiB
  (7, 'job-null', 'disk-2001', '[ds] app03_1.vmdk', 10, NULL, 999, 'pending'),  -- rejected: no ossea volume 999
  (8, 'job-ok', 'disk-2001', '[ds] app01_1.vmdk', 0, 16106127360, 7, 'pending'),  -- repaired: size from capacity
  (9, 'job-old', 'disk-2000', '[ds] app01_old.vmdk', 40, NULL, 5, 'completed'),  -- repaired: volume shared, unlinked
  (10, 'job-ok', 'disk-2002', '[ds] app01_2.vmdk', 40, NULL, 5, 'pending'),  -- imported: keeps the shared volume
  (11, 'job-ok', 'disk-2003', '[ds] app01_3.vmdk', 20, NULL, 6, 'pending'),  -- repaired: volume not mapped
  (12, 'job-paused', 'disk-2000', '[ds] app04.vmdk', 10, NULL, NULL, 'pending'),  -- rejected: its job was rejected
  (13, 'job-ok', 'disk-2004', '[ds] app01_4.vmdk', 10, NULL, 8, 'Replicating');  -- repaired: sync status

INSERT INTO nbd_exports (id, job_id, volume_id, vm_disk_id, device_mapping_uuid, export_name, port, device_path,
                         status) VALUES
  (1, 'job-ok', 'aaaaaaaa-0000-4000-8000-000000000001', 1, 'aaaaaaaa-0000-4000-8000-000000000001',
   'migration-vol-aaaaaaaa-0000-4000-8000-000000000001', 10809, '/dev/vdb', 'active'),  -- imported
  (2, 'job-ok', '', NULL, 'aaaaaaaa-0000-4000-8000-000000000005', 'migration-vm-vm-201-disk1', 10809, '/dev/vdd',
   'active'),  -- repaired: vm_disk found through job and volume
  (3, 'job-ok', 'aaaaaaaa-0000-4000-8000-00000000000b', 10, NULL,
   'migration-vol-aaaaaaaa-0000-4000-8000-00000000000b', 10809, '/dev/vdi', 'active'),  -- repaired: mapping found
  (4, 'job-old', '', 9, 'aaaaaaaa-0000-4000-8000-00000000000b', 'migration', 10809, '/dev/vdi',
   'stopped'),  -- imported: the hard-coded name
  (5, 'job-ok', 'aaaaaaaa-0000-4000-8000-000000000001', 1, 'aaaaaaaa-0000-4000-8000-000000000001',
   'migration-vm-vm-201-disk0', 10809, '/dev/vdx', 'active'),  -- repaired: a second export of /dev/vdb, stale copy
  (6, 'job-ok', '', NULL, NULL, 'migration-vm-vm-201-disk9', 10809, '/dev/vdb', 'active'),  -- rejected: untied
  (7, 'job-gone', '', 2, 'aaaaaaaa-0000-4000-8000-000000000001', 'migration-vm-vm-999-disk0', 10809, '/dev/vdb',
   'active'),  -- rejected: its disk was rejected
  (8, 'job-ok', '', 1, 'aaaaaaaa-0000-4000-8000-000000000005', 'migration-vol-aaaaaaaa-0000-4000-8000-000000000006',
   10809, '/dev/vdd', 'active'),  -- rejected: three columns, three volumes
  (9, 'job-running', 'aaaaaaaa-0000-4000-8000-000000000001', 1, 'aaaaaaaa-0000-4000-8000-000000000001',
   'migration-vm-vm-202-disk0', 10809, '/dev/vdb', 'active'),  -- rejected: job is not its disk's job
  (10, 'job-ok', 'not-a-uuid', 1, NULL, 'migration-vm-vm-201-disk5', 10809, '/dev/vdb', 'active'),  -- rejected
  (11, NULL, '', 4, 'AAAAAAAA-0000-4000-8000-000000000002', 'migration-vol-aaaaaaaa-0000-4000-8000-000000000002',
   10809, '/dev/vdc', 'failed');  -- repaired: job from its disk, UUID lower-cased

INSERT INTO volume_operations (id, type, status, volume_id, vm_id, request) VALUES
  ('op-1', 'create', 'completed', 'aaaaaaaa-0000-4000-8000-000000000001', NULL, '{}'),  -- imported
  ('op-2', 'attach', 'completed', 'AAAAAAAA-0000-4000-8000-000000000002', 'oma-1', '{}'),  -- repaired
  ('op-3', 'detach', 'failed', 'aaaaaaaa-0000-4000-8000-000000000008', 'oma-1', '{"force": true}');  -- imported
SET FOREIGN_KEY_CHECKS = 1;
