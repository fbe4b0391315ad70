-- 0001_init: the scheduler's first schema. Forward-only: never edit this file
-- once released; add 0002_*.sql instead. Applied by server/store/migrator.cc
-- inside one transaction under an advisory lock; schema_migrations (created
-- by the migrator, not here) records it.

-- Bearer tokens. Only the SHA-256 of a token is stored; the plain token is
-- shown once by CreateToken. `name` is the principal (owner of campaigns).
CREATE TABLE tokens (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL CHECK (name <> ''),
  role        text NOT NULL CHECK (role IN ('researcher', 'worker', 'admin')),
  sha256      text NOT NULL UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);
CREATE INDEX tokens_name ON tokens (name);

-- One submitted campaign file. `state` is 'active' until cancelled; readers
-- show an active campaign without blocked/queued/leased/running runs as
-- 'finished' (computed on read, so concurrent finishes never race on it).
CREATE TABLE campaigns (
  id            bigserial PRIMARY KEY,
  name          text NOT NULL,
  owner         text NOT NULL,
  priority      integer NOT NULL DEFAULT 0,
  max_attempts  integer NOT NULL CHECK (max_attempts >= 1),
  spec          jsonb NOT NULL,
  state         text NOT NULL DEFAULT 'active'
                CHECK (state IN ('active', 'finished', 'cancelled')),
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaigns_owner ON campaigns (owner, id);

-- One cell of a campaign's results table (axis values x variant); `idx` is
-- its position in the expanded campaign. The baseline is the cell it is
-- compared to (kdci=false, same axes, base variant).
CREATE TABLE experiments (
  id                      bigserial PRIMARY KEY,
  campaign_id             bigint NOT NULL REFERENCES campaigns (id),
  idx                     integer NOT NULL,
  name                    text NOT NULL,
  kind                    text NOT NULL,
  method                  text NOT NULL,
  kdci                    boolean NOT NULL DEFAULT false,
  variant                 text NOT NULL DEFAULT '',
  axes                    jsonb NOT NULL DEFAULT '{}',
  baseline_experiment_id  bigint REFERENCES experiments (id),
  UNIQUE (campaign_id, idx)
);

-- The run states (api RunState, lower case) and the allowed transitions
-- between them. A trigger on runs enforces the table, so no code path can
-- move a run illegally. failed/cancelled -> blocked: a retried run whose
-- dependency is itself being retried waits for it again.
CREATE TABLE run_states (
  name  text PRIMARY KEY
);
INSERT INTO run_states (name) VALUES
  ('blocked'), ('queued'), ('leased'), ('running'), ('succeeded'), ('failed'), ('cancelled');

CREATE TABLE run_transitions (
  from_state  text NOT NULL REFERENCES run_states (name),
  to_state    text NOT NULL REFERENCES run_states (name),
  PRIMARY KEY (from_state, to_state)
);
INSERT INTO run_transitions (from_state, to_state) VALUES
  ('blocked',   'queued'),     -- dependency succeeded
  ('blocked',   'failed'),     -- dependency failed
  ('blocked',   'cancelled'),
  ('queued',    'leased'),
  ('queued',    'succeeded'),  -- result reused
  ('queued',    'cancelled'),
  ('leased',    'running'),
  ('leased',    'queued'),     -- lease expired / gang lost / retry
  ('leased',    'failed'),
  ('leased',    'cancelled'),
  ('running',   'succeeded'),
  ('running',   'failed'),
  ('running',   'queued'),     -- retry, expiry
  ('running',   'cancelled'),
  ('failed',    'queued'),     -- retry requested
  ('failed',    'blocked'),    -- retry requested, dependency retried too
  ('cancelled', 'queued'),     -- retry requested
  ('cancelled', 'blocked');    -- retry requested, dependency retried too

-- Workers that registered (one row per worker name, e.g. host:pid).
CREATE TABLE workers (
  id             bigserial PRIMARY KEY,
  name           text NOT NULL UNIQUE,
  capabilities   jsonb NOT NULL DEFAULT '{}',
  registered_at  timestamptz NOT NULL DEFAULT now(),
  last_seen      timestamptz NOT NULL DEFAULT now()
);

-- One run: one job spec with one seed. `attempt` counts leases so far; every
-- write of an attempt carries that attempt's token (table attempts), so a
-- stale holder is fenced out. `identity` is the canonical config hash used
-- for result reuse. `depends_on` is the teacher run of a distill run.
CREATE TABLE runs (
  id                 bigserial PRIMARY KEY,
  campaign_id        bigint NOT NULL REFERENCES campaigns (id),
  experiment_id      bigint REFERENCES experiments (id),
  kind               text NOT NULL,
  seed               bigint NOT NULL DEFAULT 0,
  spec               jsonb NOT NULL,
  identity           text NOT NULL,
  owner              text NOT NULL,
  priority           integer NOT NULL DEFAULT 0,
  world_size         integer NOT NULL DEFAULT 1 CHECK (world_size >= 1),
  state              text NOT NULL CHECK (state IN ('blocked', 'queued', 'leased', 'running',
                                                    'succeeded', 'failed', 'cancelled')),
  attempt            integer NOT NULL DEFAULT 0,
  max_attempts       integer NOT NULL CHECK (max_attempts >= 1),
  not_before         timestamptz NOT NULL DEFAULT now(),
  depends_on         bigint REFERENCES runs (id),
  reused_from        bigint REFERENCES runs (id),
  last_error         text NOT NULL DEFAULT '',
  result             jsonb,
  artifact           text NOT NULL DEFAULT '',
  latest_checkpoint  text NOT NULL DEFAULT '',
  progress           double precision NOT NULL DEFAULT 0,
  latest_accuracy    double precision NOT NULL DEFAULT -1,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now()
);
-- The lease: the head of the queue by priority, then age (id).
CREATE INDEX runs_queue ON runs (priority DESC, id) WHERE state = 'queued';
CREATE INDEX runs_depends_on ON runs (depends_on) WHERE depends_on IS NOT NULL;
CREATE INDEX runs_campaign ON runs (campaign_id, state);
CREATE INDEX runs_identity ON runs (identity);
CREATE INDEX runs_owner ON runs (owner, id);

-- Refuses a state change that run_transitions does not list (SQLSTATE DF001,
-- which the store maps to FAILED_PRECONDITION) and stamps updated_at.
CREATE FUNCTION runs_before_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.state <> OLD.state AND NOT EXISTS (
       SELECT 1 FROM run_transitions WHERE from_state = OLD.state AND to_state = NEW.state) THEN
    RAISE EXCEPTION 'illegal run state transition % -> % (run %)', OLD.state, NEW.state, OLD.id
      USING ERRCODE = 'DF001';
  END IF;
  NEW.updated_at := now();
  RETURN NEW;
END;
$$;
CREATE TRIGGER runs_before_update BEFORE UPDATE ON runs
  FOR EACH ROW EXECUTE FUNCTION runs_before_update();

-- One row per rank of an attempt. A gang of W ranks gets W rows at once.
-- `token` fences every write of the attempt; `delivered_at` is set once the
-- rank's worker got its assignment (the ranks of a gang that were waiting
-- get theirs at their next lease call). `ended_at` set = the attempt is over;
-- outcome: succeeded | failed | expired | cancelled | handed_back (worker shut down).
CREATE TABLE attempts (
  run_id        bigint NOT NULL REFERENCES runs (id),
  attempt       integer NOT NULL,
  rank          integer NOT NULL,
  worker_id     bigint NOT NULL REFERENCES workers (id),
  token         text NOT NULL UNIQUE,
  master_addr   text NOT NULL,
  master_port   integer NOT NULL,
  leased_at     timestamptz NOT NULL DEFAULT now(),
  delivered_at  timestamptz,
  heartbeat_at  timestamptz,
  ended_at      timestamptz,
  outcome       text CHECK (outcome IN ('succeeded', 'failed', 'expired', 'cancelled', 'handed_back')),
  PRIMARY KEY (run_id, attempt, rank)
);
-- At most one live attempt per (run, rank): exactly one live attempt per run.
CREATE UNIQUE INDEX attempts_one_live ON attempts (run_id, rank) WHERE ended_at IS NULL;
CREATE INDEX attempts_undelivered ON attempts (worker_id)
  WHERE delivered_at IS NULL AND ended_at IS NULL;
CREATE INDEX attempts_live_since ON attempts ((coalesce(heartbeat_at, leased_at)))
  WHERE ended_at IS NULL;

-- Ranks of gangs (world_size > 1) that are still forming. The run stays
-- 'queued' until W workers hold a slot; then one transaction turns the slots
-- into W attempt rows and deletes them. A worker holds at most one slot.
CREATE TABLE gang_slots (
  run_id      bigint NOT NULL REFERENCES runs (id),
  rank        integer NOT NULL,
  worker_id   bigint NOT NULL UNIQUE REFERENCES workers (id),
  host        text NOT NULL,
  offer_port  integer NOT NULL,
  seen_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, rank)
);

-- Per-step metric points reported by rank workers, tagged with the attempt.
CREATE TABLE metrics (
  run_id   bigint NOT NULL REFERENCES runs (id),
  attempt  integer NOT NULL,
  step     bigint NOT NULL,
  name     text NOT NULL,
  value    double precision NOT NULL,
  at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX metrics_series ON metrics (run_id, name, step);

-- Checkpoints recorded by attempts; runs.latest_checkpoint is where the next
-- attempt resumes from.
CREATE TABLE checkpoints (
  run_id   bigint NOT NULL REFERENCES runs (id),
  attempt  integer NOT NULL,
  step     bigint NOT NULL,
  path     text NOT NULL,
  sha256   text NOT NULL DEFAULT '',
  at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkpoints_run ON checkpoints (run_id, step);
