-- nbdxm state store schema (SQLite 3.37 or later: tables are STRICT).
--
-- This file is the one source of the schema. It is embedded into every nbdxm binary at build time and never read
-- from a path at run time. It is an ordered list of versions: each `-- @version N` section upgrades a store from
-- version N-1 to N, so a new store runs every section and an older store runs only the sections it lacks, all in
-- one transaction (`nbdxm init`). PRAGMA user_version records the version reached. Never edit a released section:
-- add a new one.
--
-- Table and column names follow the design document "Normalized Database Schema Design" because other appliance
-- services read and write these tables directly. Its errors are fixed here; each fix is marked FIX.
--
-- References and cleanups hold for every writer, with PRAGMA foreign_keys on or off (SQLite's default is off, and
-- other services' connections often leave it so): from version 3 triggers enforce each of them; the declared foreign
-- keys stay, for the design they document and for writers that turn them on.
-- Timestamps are UTC ISO-8601 text with milliseconds, e.g. 2026-11-27T23:12:00.123Z.
-- Errors raised by triggers are sentences in the user's terms; the CLI prints them as they are.

-- @version 1

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

CREATE INDEX idx_replication_jobs_status ON replication_jobs (status);

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

CREATE UNIQUE INDEX idx_device_mappings_oma_device_path ON device_mappings (device_path)
    WHERE operation_mode = 'oma';
CREATE INDEX idx_device_mappings_vm_id ON device_mappings (vm_id);
CREATE INDEX idx_device_mappings_volume_id ON device_mappings (volume_id);
CREATE INDEX idx_device_mappings_last_sync ON device_mappings (last_sync);

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

CREATE INDEX idx_vm_disks_job_id ON vm_disks (job_id);

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

-- At most one live (pending or active) export per port, per vm_disk and per device mapping.
CREATE UNIQUE INDEX idx_nbd_exports_live_port ON nbd_exports (port) WHERE status IN ('pending', 'active');
CREATE UNIQUE INDEX idx_nbd_exports_live_disk ON nbd_exports (vm_disk_id) WHERE status IN ('pending', 'active');
CREATE UNIQUE INDEX idx_nbd_exports_live_mapping ON nbd_exports (device_mapping_id)
    WHERE status IN ('pending', 'active');
CREATE INDEX idx_nbd_exports_job_id ON nbd_exports (job_id);
-- The partial indexes above only cover live exports; the cascades from vm_disks and device_mappings need these.
CREATE INDEX idx_nbd_exports_vm_disk_id ON nbd_exports (vm_disk_id);
CREATE INDEX idx_nbd_exports_device_mapping_id ON nbd_exports (device_mapping_id);
CREATE INDEX idx_nbd_exports_status ON nbd_exports (status);

-- Owned by the volume daemon; nbdxm only keeps its shape valid. No links to other tables.
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

CREATE INDEX idx_volume_operations_volume_id ON volume_operations (volume_id);
CREATE INDEX idx_volume_operations_status ON volume_operations (status);

-- Reading an export with its device: the only way anything learns an export's device path.
CREATE VIEW export_devices AS
SELECT e.id AS export_id, e.export_name, e.port, e.status, e.status_reason, e.job_id, e.vm_disk_id,
       d.disk_id, m.id AS device_mapping_id, m.volume_uuid, m.device_path, m.operation_mode,
       m.requires_device_correlation, m.size, e.created_at, e.updated_at
FROM nbd_exports e
JOIN device_mappings m ON m.id = e.device_mapping_id
JOIN vm_disks d ON d.id = e.vm_disk_id;

-- Invariant: an export's job is its vm_disk's job.
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

-- Invariant: a live export serves the 'oma' mapping its vm_disk is linked to, of a job that is still running.
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

-- Invariant: a disk is linked only to a volume large enough to hold it (a 102 GB disk once went into a 5 GB volume).
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

-- Invariant: a disk with exports stays in its job (an export's job is its vm_disk's job).
CREATE TRIGGER vm_disks_job_fixed_while_exported BEFORE UPDATE OF job_id ON vm_disks
WHEN NEW.job_id IS NOT OLD.job_id AND EXISTS (SELECT 1 FROM nbd_exports WHERE vm_disk_id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'a vm_disk with exports cannot move to another job');
END;

-- Cleanup: a job that ends revokes its live exports.
CREATE TRIGGER replication_jobs_end_revokes_exports AFTER UPDATE OF status ON replication_jobs
WHEN NEW.status IN ('completed', 'failed', 'cancelled') AND OLD.status NOT IN ('completed', 'failed', 'cancelled')
BEGIN
    UPDATE nbd_exports SET status = 'revoked', status_reason = 'job ' || NEW.id || ' became ' || NEW.status
    WHERE job_id = NEW.id AND status IN ('pending', 'active');
END;

-- Cleanup: a disk whose volume link changes or is cleared (also by ON DELETE SET NULL) has its live exports revoked.
CREATE TRIGGER vm_disks_relink_revokes_exports AFTER UPDATE OF cloudstack_volume_uuid ON vm_disks
WHEN OLD.cloudstack_volume_uuid IS NOT NEW.cloudstack_volume_uuid
BEGIN
    UPDATE nbd_exports SET status = 'revoked',
        status_reason = 'disk ' || NEW.disk_id || ' was ' ||
            CASE WHEN NEW.cloudstack_volume_uuid IS NULL THEN 'unlinked from its volume'
                 ELSE 'linked to another volume' END
    WHERE vm_disk_id = NEW.id AND status IN ('pending', 'active');
END;

-- Cleanup: a mapping that leaves 'oma' mode (the volume went to another VM) has its live exports revoked.
CREATE TRIGGER device_mappings_failover_revokes_exports AFTER UPDATE OF operation_mode ON device_mappings
WHEN NEW.operation_mode <> 'oma'
BEGIN
    UPDATE nbd_exports SET status = 'revoked',
        status_reason = 'volume ' || NEW.volume_uuid || ' moved to ' || NEW.operation_mode || ' mode'
    WHERE device_mapping_id = NEW.id AND status IN ('pending', 'active');
END;

-- updated_at is maintained on every update, whoever writes. The `updated_at IS NOT` guard ends the recursion when a
-- connection turns PRAGMA recursive_triggers on ('now' is the same throughout one statement).
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

-- @version 2
-- Runtime state of `nbdxm serve` (the manager). Only nbdxm writes these tables; other services may read them.
-- A recorded pid is never trusted on its own: the manager and the CLI use it only while /proc shows a process with
-- the same start time (clock ticks after boot, /proc/PID/stat field 22) on the same boot (boot_id) and the expected
-- command line. The rows outlive reboots and crashes harmlessly: a stale row simply fails that check.

-- The running manager, at most one per store. `nbdxm export create` reads it to learn that a manager is running and
-- which address and ports its servers use; a second manager refuses to start while this one is alive.
CREATE TABLE export_manager (
    id             INTEGER PRIMARY KEY CONSTRAINT single_manager CHECK (id = 1),
    pid            INTEGER NOT NULL CONSTRAINT manager_pid_range CHECK (pid > 0),
    start_time     INTEGER NOT NULL,
    boot_id        TEXT NOT NULL,
    listen_address TEXT NOT NULL,
    port_low       INTEGER NOT NULL,
    port_high      INTEGER NOT NULL,
    run_dir        TEXT NOT NULL,
    -- The device rules its servers apply, so that the CLI can explain a refused device the way the plugin sees it.
    allow_regular_files INTEGER NOT NULL DEFAULT 0 CONSTRAINT manager_allow_regular_files_bool
                   CHECK (allow_regular_files IN (0, 1)),
    byid_dir       TEXT NOT NULL DEFAULT '/dev/disk/by-id',
    max_connections INTEGER NOT NULL DEFAULT 16 CONSTRAINT manager_max_connections_range CHECK (max_connections >= 1),
    version        TEXT NOT NULL,
    started_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT manager_port_range CHECK (port_low BETWEEN 1 AND 65535 AND port_high BETWEEN port_low AND 65535)
) STRICT;

-- The server of each export the manager has served: which process it is (NULL while none runs), where it listens,
-- how often it had to be restarted and why it last failed (`nbdxm export show`). Goes away with its export.
CREATE TABLE export_servers (
    export_id       INTEGER PRIMARY KEY NOT NULL REFERENCES nbd_exports (id) ON DELETE CASCADE,
    pid             INTEGER CONSTRAINT server_pid_range CHECK (pid IS NULL OR pid > 0),
    start_time      INTEGER,
    boot_id         TEXT,
    listen_address  TEXT,
    started_at      TEXT,
    restart_count   INTEGER NOT NULL DEFAULT 0 CONSTRAINT restart_count_range CHECK (restart_count >= 0),
    last_failure    TEXT,
    last_failure_at TEXT,
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT server_identity_complete
    CHECK ((pid IS NULL) = (start_time IS NULL) AND (pid IS NULL) = (boot_id IS NULL))
) STRICT;

CREATE TRIGGER export_servers_touch AFTER UPDATE ON export_servers
BEGIN
    UPDATE export_servers SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE export_id = NEW.export_id AND updated_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now');
END;

-- @version 3
-- Versions 1 and 2 enforced references and their cleanups with foreign keys only, which a connection that leaves
-- PRAGMA foreign_keys off (SQLite's default) ignores: it could add a disk of a job that does not exist, or delete a
-- job and leave its exports active. From here triggers enforce them for every writer. With foreign keys on, a
-- foreign key's cascade and the trigger's cleanup both run: whichever comes second finds nothing left to do.
-- Renaming a row that others refer to is refused, as a foreign key (NO ACTION) refuses it.
-- Rows an older store already holds broken are kept as they are: `nbdxm check` reports them, and export_devices
-- (below) never shows such an export as live.

-- References: each BEFORE INSERT / UPDATE trigger refuses a row whose referenced row does not exist. (A NULL is left
-- to the NOT NULL constraints, which name the column.)
CREATE TRIGGER vm_disks_job_exists_insert BEFORE INSERT ON vm_disks
WHEN NEW.job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM replication_jobs WHERE id = NEW.job_id)
BEGIN
    SELECT RAISE(ABORT, 'the vm_disk''s job does not exist; add the job first');
END;
CREATE TRIGGER vm_disks_job_exists_update BEFORE UPDATE OF job_id ON vm_disks
WHEN NEW.job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM replication_jobs WHERE id = NEW.job_id)
BEGIN
    SELECT RAISE(ABORT, 'the vm_disk''s job does not exist; add the job first');
END;
CREATE TRIGGER vm_disks_volume_exists_insert BEFORE INSERT ON vm_disks
WHEN NEW.cloudstack_volume_uuid IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM device_mappings WHERE volume_uuid = NEW.cloudstack_volume_uuid)
BEGIN
    SELECT RAISE(ABORT, 'the volume has no device mapping; add the mapping before linking a disk to the volume');
END;
CREATE TRIGGER vm_disks_volume_exists_update BEFORE UPDATE OF cloudstack_volume_uuid ON vm_disks
WHEN NEW.cloudstack_volume_uuid IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM device_mappings WHERE volume_uuid = NEW.cloudstack_volume_uuid)
BEGIN
    SELECT RAISE(ABORT, 'the volume has no device mapping; add the mapping before linking a disk to the volume');
END;
CREATE TRIGGER nbd_exports_references_exist_insert BEFORE INSERT ON nbd_exports
BEGIN
    SELECT RAISE(ABORT, 'the export''s job does not exist')
    WHERE NEW.job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM replication_jobs WHERE id = NEW.job_id);
    SELECT RAISE(ABORT, 'the export''s vm_disk does not exist')
    WHERE NEW.vm_disk_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM vm_disks WHERE id = NEW.vm_disk_id);
    SELECT RAISE(ABORT, 'the export''s device mapping does not exist')
    WHERE NEW.device_mapping_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM device_mappings WHERE id = NEW.device_mapping_id);
END;
CREATE TRIGGER nbd_exports_references_exist_update BEFORE UPDATE OF job_id, vm_disk_id, device_mapping_id ON nbd_exports
BEGIN
    SELECT RAISE(ABORT, 'the export''s job does not exist')
    WHERE NEW.job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM replication_jobs WHERE id = NEW.job_id);
    SELECT RAISE(ABORT, 'the export''s vm_disk does not exist')
    WHERE NEW.vm_disk_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM vm_disks WHERE id = NEW.vm_disk_id);
    SELECT RAISE(ABORT, 'the export''s device mapping does not exist')
    WHERE NEW.device_mapping_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM device_mappings WHERE id = NEW.device_mapping_id);
END;
CREATE TRIGGER export_servers_export_exists_insert BEFORE INSERT ON export_servers
WHEN NEW.export_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nbd_exports WHERE id = NEW.export_id)
BEGIN
    SELECT RAISE(ABORT, 'the export of the server record does not exist');
END;
CREATE TRIGGER export_servers_export_exists_update BEFORE UPDATE OF export_id ON export_servers
WHEN NEW.export_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nbd_exports WHERE id = NEW.export_id)
BEGIN
    SELECT RAISE(ABORT, 'the export of the server record does not exist');
END;

-- References: the key of a row that others refer to stays (a foreign key without ON UPDATE refuses the same).
CREATE TRIGGER replication_jobs_id_fixed_while_referenced BEFORE UPDATE OF id ON replication_jobs
WHEN NEW.id IS NOT OLD.id AND (EXISTS (SELECT 1 FROM vm_disks WHERE job_id = OLD.id)
                               OR EXISTS (SELECT 1 FROM nbd_exports WHERE job_id = OLD.id))
BEGIN
    SELECT RAISE(ABORT, 'a job that has disks or exports cannot change its id');
END;
CREATE TRIGGER device_mappings_keys_fixed_while_referenced BEFORE UPDATE OF id, volume_uuid ON device_mappings
BEGIN
    SELECT RAISE(ABORT, 'a device mapping that has exports cannot change its id')
    WHERE NEW.id IS NOT OLD.id AND EXISTS (SELECT 1 FROM nbd_exports WHERE device_mapping_id = OLD.id);
    SELECT RAISE(ABORT, 'the UUID of a volume that a disk is linked to cannot change; unlink the disk first')
    WHERE NEW.volume_uuid IS NOT OLD.volume_uuid
      AND EXISTS (SELECT 1 FROM vm_disks WHERE cloudstack_volume_uuid = OLD.volume_uuid);
END;
CREATE TRIGGER vm_disks_id_fixed_while_exported BEFORE UPDATE OF id ON vm_disks
WHEN NEW.id IS NOT OLD.id AND EXISTS (SELECT 1 FROM nbd_exports WHERE vm_disk_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'a vm_disk that has exports cannot change its id');
END;
CREATE TRIGGER nbd_exports_id_fixed_while_served BEFORE UPDATE OF id ON nbd_exports
WHEN NEW.id IS NOT OLD.id AND EXISTS (SELECT 1 FROM export_servers WHERE export_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'an export that has a server record cannot change its id');
END;

-- Cleanup: what goes with a deleted row (the ON DELETE actions of the foreign keys, for every writer).
CREATE TRIGGER replication_jobs_delete_deletes_disks_and_exports AFTER DELETE ON replication_jobs
BEGIN
    DELETE FROM nbd_exports WHERE job_id = OLD.id;
    DELETE FROM vm_disks WHERE job_id = OLD.id;
END;
CREATE TRIGGER device_mappings_delete_deletes_exports_and_unlinks_disk AFTER DELETE ON device_mappings
BEGIN
    DELETE FROM nbd_exports WHERE device_mapping_id = OLD.id;
    UPDATE vm_disks SET cloudstack_volume_uuid = NULL WHERE cloudstack_volume_uuid = OLD.volume_uuid;
END;
CREATE TRIGGER vm_disks_delete_deletes_exports AFTER DELETE ON vm_disks
BEGIN
    DELETE FROM nbd_exports WHERE vm_disk_id = OLD.id;
END;
CREATE TRIGGER nbd_exports_delete_deletes_server AFTER DELETE ON nbd_exports
BEGIN
    DELETE FROM export_servers WHERE export_id = OLD.id;
END;

-- Reading an export with its device, now only through its complete chain (export -> disk -> job, export -> mapping):
-- an export whose job, disk or mapping a writer of an older version deleted is not shown at all, and an export of a
-- job that has ended is never shown live, whatever its row says (`nbdxm check` reports both rows). The plugin admits
-- connects and keeps them open only through this view, at every connect: the conditions are written with = and OR,
-- because each IN list in a column expression builds a temporary table at every execution (measured: the plugin's
-- lookup took twice as long).
DROP VIEW export_devices;
CREATE VIEW export_devices AS
SELECT e.id AS export_id, e.export_name, e.port,
       CASE WHEN (e.status = 'pending' OR e.status = 'active')
                 AND (j.status = 'completed' OR j.status = 'failed' OR j.status = 'cancelled')
            THEN 'revoked' ELSE e.status END AS status,
       CASE WHEN (e.status = 'pending' OR e.status = 'active')
                 AND (j.status = 'completed' OR j.status = 'failed' OR j.status = 'cancelled')
            THEN 'job ' || j.id || ' has ended (' || j.status || ')' ELSE e.status_reason END AS status_reason,
       e.job_id, e.vm_disk_id, d.disk_id, m.id AS device_mapping_id, m.volume_uuid, m.device_path, m.operation_mode,
       m.requires_device_correlation, m.size, e.created_at, e.updated_at
FROM nbd_exports e
JOIN replication_jobs j ON j.id = e.job_id
JOIN vm_disks d ON d.id = e.vm_disk_id AND d.job_id = e.job_id
JOIN device_mappings m ON m.id = e.device_mapping_id;

-- @version 4
-- Export servers are run by a supervisor backend (`nbdxm serve --supervisor`): systemd units, or direct children of
-- the manager. A server is no longer recorded by its process (pid, start_time and boot_id stay NULL from here): it
-- is known by the backend that runs it and, under systemd, by its unit. A row's server runs while `supervisor` is
-- set; `served_created_at` names the export's life it serves (a row re-used by `export create` gets a new server,
-- and the stop of the old one must not clear the new one's record). `settings_stale` says how the server's settings
-- differ from the manager's while it still runs with the old ones (`nbdxm export show`, `nbdxm check`).
ALTER TABLE export_servers ADD COLUMN supervisor TEXT
    CONSTRAINT server_supervisor_kind CHECK (supervisor IS NULL OR supervisor IN ('systemd', 'direct'));
ALTER TABLE export_servers ADD COLUMN unit TEXT;
ALTER TABLE export_servers ADD COLUMN served_created_at TEXT;
ALTER TABLE export_servers ADD COLUMN settings_stale TEXT;

-- @version 5
-- Who may reach an export (`nbdxm export create --tls`, `--allow-from`). Both are enforced by the export's own
-- server: `tls` = 1 makes it require TLS with a pre-shared key of its own (nbdkit --tls=require --tls-psk), the key
-- held in a file of the manager's (never in the store: the store is read by other services); `allow_from` lists the
-- client networks its server accepts (the plugin's allow-from=, checked before the handshake), NULL for any client.
-- `allow_from` is one or more IPv4 or IPv6 addresses, each with an optional /prefix length, separated by commas
-- without spaces. The constraint keeps out what is no address (keywords such as nbdkit's `all`, `anyipv4`,
-- `uid:N`, ... and empty items): only hex digits, dots, colons, slashes and commas, no empty item, each item with
-- a dot or a colon. The CLI checks each address fully.
ALTER TABLE nbd_exports ADD COLUMN tls INTEGER NOT NULL DEFAULT 0 CONSTRAINT export_tls_bool CHECK (tls IN (0, 1));
ALTER TABLE nbd_exports ADD COLUMN allow_from TEXT
    CONSTRAINT export_allow_from_format
    CHECK (allow_from IS NULL
           OR (length(allow_from) BETWEEN 1 AND 1000 AND allow_from NOT GLOB '*[^0-9a-fA-F.:/,]*'
               AND allow_from NOT GLOB ',*' AND allow_from NOT GLOB '*,' AND allow_from NOT GLOB '*,,*'
               AND allow_from NOT GLOB '*/' AND allow_from NOT GLOB '*/,*' AND allow_from NOT GLOB '/*'
               AND allow_from NOT GLOB '*,/*' AND (allow_from GLOB '*.*' OR allow_from GLOB '*:*')));

-- The TLS default of the running manager (`nbdxm serve --tls off|require`): what `nbdxm export create` uses without
-- --tls or --no-tls.
ALTER TABLE export_manager ADD COLUMN tls_default INTEGER NOT NULL DEFAULT 0
    CONSTRAINT manager_tls_default_bool CHECK (tls_default IN (0, 1));
-- Durability (`nbdxm export create --durability`, `nbdxm serve --durability`). on-close: a connection's writes are
-- made durable (fdatasync) when it closes, the only point the migration client allows, since it never flushes.
-- write-through: every write and write-zeroes is durable before it is acknowledged. The export's server reads its
-- export's mode at every connect (export_devices); the manager's row holds the default `export create` applies.
ALTER TABLE nbd_exports ADD COLUMN durability TEXT NOT NULL DEFAULT 'on-close'
    CONSTRAINT export_durability_valid CHECK (durability IN ('on-close', 'write-through'));
ALTER TABLE export_manager ADD COLUMN durability TEXT NOT NULL DEFAULT 'on-close'
    CONSTRAINT manager_durability_valid CHECK (durability IN ('on-close', 'write-through'));

-- A sync of an export's writes that failed (its server's fdatasync at close or at a flush): acknowledged writes may
-- be lost, so the export is failed and the failure stays reported (`nbdxm check`, exit 5) until an operator
-- acknowledges it (`nbdxm export acknowledge`). One row per export life (served_created_at: the export's created_at
-- when it failed); `failures` counts the failed syncs its servers reported, `reason` is the last one's. Written by the
-- manager from what the servers report; goes away with its export.
CREATE TABLE export_durability_failures (
    export_id         INTEGER NOT NULL REFERENCES nbd_exports (id) ON DELETE CASCADE,
    served_created_at TEXT NOT NULL,
    failures          INTEGER NOT NULL CONSTRAINT durability_failures_range CHECK (failures >= 1),
    reason            TEXT NOT NULL CONSTRAINT durability_reason_length CHECK (length(reason) BETWEEN 1 AND 1000),
    first_failed_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_failed_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    acknowledged_at   TEXT,
    PRIMARY KEY (export_id, served_created_at)
) STRICT;

CREATE INDEX idx_export_durability_failures_open ON export_durability_failures (export_id)
    WHERE acknowledged_at IS NULL;

CREATE TRIGGER export_durability_failures_export_exists_insert BEFORE INSERT ON export_durability_failures
WHEN NEW.export_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nbd_exports WHERE id = NEW.export_id)
BEGIN
    SELECT RAISE(ABORT, 'the export of the durability failure does not exist');
END;
CREATE TRIGGER export_durability_failures_export_exists_update BEFORE UPDATE OF export_id ON export_durability_failures
WHEN NEW.export_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nbd_exports WHERE id = NEW.export_id)
BEGIN
    SELECT RAISE(ABORT, 'the export of the durability failure does not exist');
END;
CREATE TRIGGER nbd_exports_id_fixed_while_failed_durably BEFORE UPDATE OF id ON nbd_exports
WHEN NEW.id IS NOT OLD.id AND EXISTS (SELECT 1 FROM export_durability_failures WHERE export_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'an export that has a durability failure cannot change its id');
END;
CREATE TRIGGER nbd_exports_delete_deletes_durability_failures AFTER DELETE ON nbd_exports
BEGIN
    DELETE FROM export_durability_failures WHERE export_id = OLD.id;
END;

DROP VIEW export_devices;
CREATE VIEW export_devices AS
SELECT e.id AS export_id, e.export_name, e.port,
       CASE WHEN (e.status = 'pending' OR e.status = 'active')
                 AND (j.status = 'completed' OR j.status = 'failed' OR j.status = 'cancelled')
            THEN 'revoked' ELSE e.status END AS status,
       CASE WHEN (e.status = 'pending' OR e.status = 'active')
                 AND (j.status = 'completed' OR j.status = 'failed' OR j.status = 'cancelled')
            THEN 'job ' || j.id || ' has ended (' || j.status || ')' ELSE e.status_reason END AS status_reason,
       e.job_id, e.vm_disk_id, d.disk_id, m.id AS device_mapping_id, m.volume_uuid, m.device_path, m.operation_mode,
       m.requires_device_correlation, m.size, e.created_at, e.updated_at, e.tls, e.allow_from, e.durability
FROM nbd_exports e
JOIN replication_jobs j ON j.id = e.job_id
JOIN vm_disks d ON d.id = e.vm_disk_id AND d.job_id = e.job_id
JOIN device_mappings m ON m.id = e.device_mapping_id;

-- @version 6
-- What each export's servers counted (the counter file of the export's life, folded by the manager every second
-- while its numbers change), for other services to read: `nbdxm export list` and `nbdxm export watch` read only this
-- table. One row per export life (served_created_at: the export's created_at while it was served); the row of the
-- export's current life is the one whose served_created_at equals nbd_exports.created_at. Counters are the life's
-- totals since its first connect; bytes count successful requests only. coverage_bytes: distinct bytes of the volume
-- written or zeroed in this life (whole 64 KiB granules; rewrites and retries are not counted twice).
-- write_rate_bytes_per_second: bytes written and zeroed per second over the last 10 s, as the manager last saw them
-- (it keeps the samples in memory; a new manager reports 0 until it has two samples). connections_open is as of
-- updated_at. Written only by the manager; goes away with its export.
-- The manager folds the same counters into the life's vm_disk in the same transaction: bytes_synced is the sum of
-- bytes_written + bytes_zeroed over the rows of every export life that served the disk (vm_disk_id; its job's), sync_progress_percent is
-- the current life's coverage against the disk's size (size_gb GiB; at most 100), and a 'pending' disk becomes
-- 'syncing' at its export's first write. The manager never sets 'completed', 'failed' or 'cancelled': whether a copy
-- is finished is the control plane's to say (an incremental sync never covers the whole disk).
CREATE TABLE export_counters (
    export_id                   INTEGER NOT NULL REFERENCES nbd_exports (id) ON DELETE CASCADE,
    served_created_at           TEXT NOT NULL,
    bytes_written               INTEGER NOT NULL DEFAULT 0,
    bytes_zeroed                INTEGER NOT NULL DEFAULT 0,
    bytes_trimmed               INTEGER NOT NULL DEFAULT 0,
    bytes_read                  INTEGER NOT NULL DEFAULT 0,
    requests_read               INTEGER NOT NULL DEFAULT 0,
    requests_write              INTEGER NOT NULL DEFAULT 0,
    requests_zero               INTEGER NOT NULL DEFAULT 0,
    requests_trim               INTEGER NOT NULL DEFAULT 0,
    requests_flush              INTEGER NOT NULL DEFAULT 0,
    failed_read                 INTEGER NOT NULL DEFAULT 0,
    failed_write                INTEGER NOT NULL DEFAULT 0,
    failed_zero                 INTEGER NOT NULL DEFAULT 0,
    failed_trim                 INTEGER NOT NULL DEFAULT 0,
    failed_flush                INTEGER NOT NULL DEFAULT 0,
    connections_open            INTEGER NOT NULL DEFAULT 0,
    connections_total           INTEGER NOT NULL DEFAULT 0,
    refused_not_active          INTEGER NOT NULL DEFAULT 0,
    refused_device              INTEGER NOT NULL DEFAULT 0,
    last_write_at               TEXT,
    coverage_bytes              INTEGER NOT NULL DEFAULT 0,
    volume_size                 INTEGER NOT NULL DEFAULT 0,
    write_rate_bytes_per_second INTEGER NOT NULL DEFAULT 0,
    updated_at                  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- The vm_disk the life served (the export's, when its row was first written while the life was current; NULL
    -- when it never was): an export row is reused by later jobs and disks, so its current vm_disk_id is not the
    -- disk of its earlier lives. bytes_synced sums the lives of the disk by this column.
    vm_disk_id                  INTEGER,
    CONSTRAINT export_counters_range
    CHECK (bytes_written >= 0 AND bytes_zeroed >= 0 AND bytes_trimmed >= 0 AND bytes_read >= 0
           AND connections_open >= 0 AND coverage_bytes >= 0 AND write_rate_bytes_per_second >= 0),
    PRIMARY KEY (export_id, served_created_at)
) STRICT;

CREATE TRIGGER export_counters_export_exists_insert BEFORE INSERT ON export_counters
WHEN NEW.export_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nbd_exports WHERE id = NEW.export_id)
BEGIN
    SELECT RAISE(ABORT, 'the export of the counters does not exist');
END;
CREATE TRIGGER export_counters_export_exists_update BEFORE UPDATE OF export_id ON export_counters
WHEN NEW.export_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nbd_exports WHERE id = NEW.export_id)
BEGIN
    SELECT RAISE(ABORT, 'the export of the counters does not exist');
END;
CREATE TRIGGER nbd_exports_id_fixed_while_counted BEFORE UPDATE OF id ON nbd_exports
WHEN NEW.id IS NOT OLD.id AND EXISTS (SELECT 1 FROM export_counters WHERE export_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'an export that has counters cannot change its id');
END;
CREATE TRIGGER nbd_exports_delete_deletes_counters AFTER DELETE ON nbd_exports
BEGIN
    DELETE FROM export_counters WHERE export_id = OLD.id;
END;

-- How clients reach an export (`nbdxm export create --transport tcp|unix`, `--shared`): its `transport`.
-- - tcp: its own server listens on its own TCP port, `port`, on the manager's listen address. Port uniqueness among
--   live exports is an invariant of the store for these exports only (idx_nbd_exports_live_port, rebuilt below).
-- - unix: its own server listens on the Unix socket <run-dir>/exports/<export_name>.sock (mode 0660, group
--   nbdxm-clients), which follows from the export's name (unique) and the manager's run directory
--   (export_manager.run_dir): no path is stored, as no copy of a device path is.
-- - shared: no server of its own; the manager's one shared server (export_manager.shared_listener) serves it by
--   name, together with every other live shared export.
-- So an export's listeners are recorded by its transport: a port of its own (tcp), a socket named after it (unix),
-- or the manager's shared listener (shared). Only a tcp export's `port` is a listener. The column stays NOT NULL
-- (SQLite cannot drop a NOT NULL constraint without rebuilding the table, which the cascades of other tables'
-- rows forbid in a migration); a unix or shared export records 10809, NBD's well-known port, and names no listener
-- with it: readers must look at `transport` first, and export_devices shows such an export's port as NULL.
-- The server record of a unix export (export_servers.listen_address) holds its socket's path.
ALTER TABLE nbd_exports ADD COLUMN transport TEXT NOT NULL DEFAULT 'tcp'
    CONSTRAINT export_transport_valid CHECK (transport IN ('tcp', 'unix', 'shared'));
-- Who may reach a unix export: `allow_peers` lists uid:N and gid:N items (numbers, comma-separated, no spaces); its
-- server admits a client whose uid, or whose primary gid, is listed (SO_PEERCRED), NULL for any client that can open
-- the socket. `allow_from` (addresses) is for tcp exports only, `allow_peers` for unix exports only; `tls` is refused
-- for shared exports (nbdkit 1.32 does not tell the plugin which pre-shared key a client used, so one server cannot
-- hold each export to its own key). `allow_peers` holds exactly what the CLI records: items uid:N or gid:N, N a
-- number from 0 to 4294967295 written without a leading zero (the CHECK reads each item's prefix as '#'); only
-- duplicate items, which the CLI drops, are beyond a CHECK (it cannot look at one item against another).
ALTER TABLE nbd_exports ADD COLUMN allow_peers TEXT
    CONSTRAINT export_allow_peers_format
    CHECK (allow_peers IS NULL
           OR (length(allow_peers) BETWEEN 5 AND 1000
               AND allow_peers NOT GLOB '*[^0-9uidg:,]*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') GLOB '#[0-9]*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*[^0-9#,]*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*[^0-9]'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*#[^0-9]*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*,[^#]*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*[^,]#*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*#0[0-9]*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*#[5-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*#4[3-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*#429[5-9][0-9][0-9][0-9][0-9][0-9][0-9]*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*#42949[7-9][0-9][0-9][0-9][0-9]*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*#429496[89][0-9][0-9][0-9]*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*#4294967[3-9][0-9][0-9]*'
               AND replace(replace(allow_peers, 'uid:', '#'), 'gid:', '#') NOT GLOB '*#429496729[6-9]*'));

-- The transport's rules, for every writer (a trigger: a column added by ALTER TABLE cannot carry a table constraint).
CREATE TRIGGER nbd_exports_transport_rules_insert BEFORE INSERT ON nbd_exports
BEGIN
    SELECT RAISE(ABORT, 'allow_from (client addresses) is for tcp exports; a unix export takes allow_peers (uid:N, gid:N)')
    WHERE NEW.allow_from IS NOT NULL AND NEW.transport <> 'tcp';
    SELECT RAISE(ABORT, 'allow_peers (uid:N, gid:N) is for unix exports; a tcp export takes allow_from (addresses)')
    WHERE NEW.allow_peers IS NOT NULL AND NEW.transport <> 'unix';
    SELECT RAISE(ABORT, 'a shared export cannot require TLS: the shared server cannot tell which key a client used')
    WHERE NEW.tls = 1 AND NEW.transport = 'shared';
END;
CREATE TRIGGER nbd_exports_transport_rules_update BEFORE UPDATE OF transport, allow_from, allow_peers, tls ON nbd_exports
BEGIN
    SELECT RAISE(ABORT, 'allow_from (client addresses) is for tcp exports; a unix export takes allow_peers (uid:N, gid:N)')
    WHERE NEW.allow_from IS NOT NULL AND NEW.transport <> 'tcp';
    SELECT RAISE(ABORT, 'allow_peers (uid:N, gid:N) is for unix exports; a tcp export takes allow_from (addresses)')
    WHERE NEW.allow_peers IS NOT NULL AND NEW.transport <> 'unix';
    SELECT RAISE(ABORT, 'a shared export cannot require TLS: the shared server cannot tell which key a client used')
    WHERE NEW.tls = 1 AND NEW.transport = 'shared';
END;

-- At most one live export per port: tcp exports only (unix and shared exports have no port of their own).
DROP INDEX idx_nbd_exports_live_port;
CREATE UNIQUE INDEX idx_nbd_exports_live_port ON nbd_exports (port)
    WHERE status IN ('pending', 'active') AND transport = 'tcp';

-- The manager's defaults and its shared listener (`nbdxm serve --transport`, `--shared-listener ADDR:PORT` or
-- `--shared-socket PATH`; NULL: no shared server runs, and `export create --shared` is refused).
ALTER TABLE export_manager ADD COLUMN transport_default TEXT NOT NULL DEFAULT 'tcp'
    CONSTRAINT manager_transport_default_valid CHECK (transport_default IN ('tcp', 'unix'));
ALTER TABLE export_manager ADD COLUMN shared_listener TEXT
    CONSTRAINT manager_shared_listener_length CHECK (shared_listener IS NULL OR length(shared_listener) BETWEEN 1 AND 255);

DROP VIEW export_devices;
CREATE VIEW export_devices AS
SELECT e.id AS export_id, e.export_name, CASE WHEN e.transport = 'tcp' THEN e.port END AS port,
       CASE WHEN (e.status = 'pending' OR e.status = 'active')
                 AND (j.status = 'completed' OR j.status = 'failed' OR j.status = 'cancelled')
            THEN 'revoked' ELSE e.status END AS status,
       CASE WHEN (e.status = 'pending' OR e.status = 'active')
                 AND (j.status = 'completed' OR j.status = 'failed' OR j.status = 'cancelled')
            THEN 'job ' || j.id || ' has ended (' || j.status || ')' ELSE e.status_reason END AS status_reason,
       e.job_id, e.vm_disk_id, d.disk_id, m.id AS device_mapping_id, m.volume_uuid, m.device_path, m.operation_mode,
       m.requires_device_correlation, m.size, e.created_at, e.updated_at, e.tls, e.allow_from, e.durability,
       e.transport, e.allow_peers
FROM nbd_exports e
JOIN replication_jobs j ON j.id = e.job_id
JOIN vm_disks d ON d.id = e.vm_disk_id AND d.job_id = e.job_id
JOIN device_mappings m ON m.id = e.device_mapping_id;
