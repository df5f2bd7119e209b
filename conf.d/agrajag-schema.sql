-- The heartbeat table of agrajag's INSERT-based master check (agrajag/daemon/probe.py).
--
-- Run once, as a superuser or the database owner, on the primary (the standbys get it by
-- replication), in the database the check connects to:
--   - `check.dbname` in the daemon's YAML, when set;
--   - otherwise the `dbname` of each node's conninfo in repmgr (the "Connection string"
--     column of `repmgr cluster show`; usually `repmgr`), `postgres` if it names none.
-- e.g.  psql -h <primary> -d repmgr -f agrajag-schema.sql
-- Idempotent. A daemon whose login role may create schemas creates the table itself on
-- first use; a dedicated `agrajag` login role (CREATE ROLE agrajag LOGIN PASSWORD '...')
-- needs these GRANTs.

CREATE SCHEMA IF NOT EXISTS agrajag;
CREATE TABLE IF NOT EXISTS agrajag.heartbeat (
    checker    text PRIMARY KEY,
    checked_at timestamptz NOT NULL DEFAULT now()
);

GRANT USAGE, CREATE ON SCHEMA agrajag TO agrajag;
-- INSERT ... ON CONFLICT (checker) also needs SELECT on the conflict column.
GRANT SELECT (checker), INSERT, UPDATE ON agrajag.heartbeat TO agrajag;
