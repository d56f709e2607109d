-- agentnet gateway schema, version 1 (`specs/gateway-api.md#storage`).
--
-- Every row belongs to one organisation and every query the API makes names it. Amounts are
-- integers in micros (millionths of the currency unit); times are timestamptz.

CREATE TABLE orgs (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE teams (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name),
    UNIQUE (org_id, id)
);

-- People. A member may belong to one team; API keys may belong to a member.
CREATE TABLE members (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    team_id     uuid,
    email       text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    role        text NOT NULL CHECK (role IN ('viewer', 'developer', 'team_lead', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, email),
    FOREIGN KEY (org_id, team_id) REFERENCES teams (org_id, id) ON DELETE SET NULL (team_id)
);
CREATE INDEX members_team ON members (org_id, team_id);

-- API keys: `agn_<key_id>_<secret>`. Only SHA-256 of the secret is kept. A rotation keeps
-- the previous secret valid until `previous_valid_until`. A team lead's key names its team.
CREATE TABLE api_keys (
    key_id                text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    org_id                uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    team_id               uuid,
    member_id             uuid REFERENCES members (id) ON DELETE SET NULL,
    name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    role                  text NOT NULL CHECK (role IN ('viewer', 'developer', 'team_lead', 'admin')),
    scopes                text[] NOT NULL DEFAULT '{}',
    secret_hash           bytea NOT NULL CHECK (length(secret_hash) = 32),
    previous_hash         bytea CHECK (length(previous_hash) = 32),
    previous_valid_until  timestamptz,
    expires_at            timestamptz,
    revoked_at            timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, team_id) REFERENCES teams (org_id, id)
);
CREATE INDEX api_keys_org ON api_keys (org_id, created_at);

-- The organisation's agents, by DID, with the membership credential the gateway issued.
CREATE TABLE agents (
    org_id      uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    did         text NOT NULL CHECK (did LIKE 'did:key:z%' AND length(did) <= 128),
    team_id     uuid,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    credential  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, did),
    -- One organisation per agent: the gateway's pause notices name the agent, so two
    -- organisations sharing it could pause each other's agents.
    UNIQUE (did),
    FOREIGN KEY (org_id, team_id) REFERENCES teams (org_id, id)
);
CREATE INDEX agents_team ON agents (org_id, team_id);

-- Model prices, versioned by the time they take effect. An event without a provider-reported
-- cost is priced by the version in effect at the event's time.
CREATE TABLE model_prices (
    id                      bigserial PRIMARY KEY,
    org_id                  uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    model                   text NOT NULL CHECK (length(model) BETWEEN 1 AND 128),
    currency                text NOT NULL CHECK (currency ~ '^[A-Za-z0-9]{1,8}$'),
    input_micros_per_mtok   bigint NOT NULL CHECK (input_micros_per_mtok >= 0),
    output_micros_per_mtok  bigint NOT NULL CHECK (output_micros_per_mtok >= 0),
    effective_from          timestamptz NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, model, currency, effective_from)
);

-- Runs and their events are partitioned by month (see `ensure_partitions` below). The
-- idempotency key lives in a table of its own, because a unique key on a partitioned table
-- must contain the partition key.
CREATE TABLE run_keys (
    org_id           uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    run_id           uuid NOT NULL,
    started_at       timestamptz NOT NULL,
    PRIMARY KEY (org_id, idempotency_key)
);

CREATE TABLE runs (
    org_id       uuid NOT NULL,
    id           uuid NOT NULL,
    idempotency_key text NOT NULL,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    agent        text NOT NULL,
    team_id      uuid,
    key_id       text NOT NULL,
    status       text NOT NULL,
    events       integer NOT NULL,
    currency     text NOT NULL,
    cost_micros  bigint NOT NULL,
    PRIMARY KEY (org_id, started_at, id)
) PARTITION BY RANGE (started_at);
CREATE INDEX runs_agent ON runs (org_id, agent, started_at);
CREATE INDEX runs_team ON runs (org_id, team_id, started_at);
CREATE INDEX runs_id ON runs (org_id, id);

CREATE TABLE events (
    org_id         uuid NOT NULL,
    run_id         uuid NOT NULL,
    seq            integer NOT NULL,
    at             timestamptz NOT NULL,
    kind           text NOT NULL,
    model          text,
    input_tokens   bigint NOT NULL,
    output_tokens  bigint NOT NULL,
    currency       text NOT NULL,
    cost_micros    bigint NOT NULL,
    cost_source    text NOT NULL CHECK (cost_source IN ('provider', 'price_table', 'unpriced')),
    price_id       bigint
) PARTITION BY RANGE (at);
CREATE INDEX events_run ON events (org_id, run_id, seq);
CREATE INDEX events_at ON events (org_id, at);

CREATE TABLE runs_default PARTITION OF runs DEFAULT;
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- Creates the monthly partitions of runs and events that cover [from, to). Rows outside
-- every monthly partition land in the default ones, so an insert never fails for its time.
CREATE FUNCTION agentnet_ensure_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month timestamptz := date_trunc('month', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    next timestamptz;
    created integer := 0;
    tbl text;
    suffix text;
BEGIN
    -- One creator at a time, so that two gateways starting together do not race.
    PERFORM pg_advisory_xact_lock(hashtext('agentnet_ensure_partitions'));
    WHILE month < to_ts LOOP
        next := month + interval '1 month';
        suffix := to_char(month AT TIME ZONE 'UTC', 'YYYY_MM');
        FOREACH tbl IN ARRAY ARRAY['runs', 'events'] LOOP
            IF to_regclass(tbl || '_' || suffix) IS NULL THEN
                -- A default partition holding rows of this month would block the new one;
                -- such rows are moved into it.
                EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', tbl || '_' || suffix, tbl);
                EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= %L AND %I < %L RETURNING *) INSERT INTO %I SELECT * FROM moved',
                    tbl || '_default', CASE tbl WHEN 'runs' THEN 'started_at' ELSE 'at' END, month,
                    CASE tbl WHEN 'runs' THEN 'started_at' ELSE 'at' END, next, tbl || '_' || suffix);
                EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                    tbl, tbl || '_' || suffix, month, next);
                created := created + 1;
            END IF;
        END LOOP;
        month := next;
    END LOOP;
    RETURN created;
END $$;

SELECT agentnet_ensure_partitions(now() - interval '3 months', now() + interval '3 months');

-- Budgets. `limit_micros` is 100%; the hard stop is at 120%. `reserved_micros` is held by
-- open reservations; `spent_micros` is settled intents plus ingested run costs.
-- `reauthorised` is the approval to spend past 100% in this period.
CREATE TABLE budgets (
    id                uuid PRIMARY KEY,
    org_id            uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    scope             text NOT NULL CHECK (scope IN ('org', 'team', 'agent', 'key')),
    scope_id          text NOT NULL CHECK (length(scope_id) BETWEEN 1 AND 256),
    period            text NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly', 'total')),
    currency          text NOT NULL CHECK (currency ~ '^[A-Za-z0-9]{1,8}$'),
    limit_micros      bigint NOT NULL CHECK (limit_micros > 0 AND limit_micros <= 1000000000000000),
    period_start      timestamptz NOT NULL,
    spent_micros      bigint NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
    reserved_micros   bigint NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0),
    reauthorised      boolean NOT NULL DEFAULT false,
    auto_pause        boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, scope, scope_id, currency)
);
CREATE INDEX budgets_scope ON budgets (org_id, scope, scope_id);

CREATE TABLE budget_reservations (
    id              uuid PRIMARY KEY,
    org_id          uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    key_id          text NOT NULL,
    intent_id       text NOT NULL,
    agent           text NOT NULL,
    capability      text NOT NULL,
    currency        text NOT NULL,
    amount_micros   bigint NOT NULL CHECK (amount_micros >= 0),
    settled_micros  bigint,
    status          text NOT NULL CHECK (status IN ('held', 'settled', 'released')),
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    ended_at        timestamptz
);
CREATE INDEX budget_reservations_org ON budget_reservations (org_id, created_at);
CREATE INDEX budget_reservations_expiry ON budget_reservations (expires_at) WHERE status = 'held';

-- Which budgets a reservation holds, and how much of each.
CREATE TABLE budget_holds (
    reservation_id  uuid NOT NULL REFERENCES budget_reservations (id) ON DELETE CASCADE,
    budget_id       uuid NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    amount_micros   bigint NOT NULL,
    PRIMARY KEY (reservation_id, budget_id)
);
CREATE INDEX budget_holds_budget ON budget_holds (budget_id);

-- Ladder alerts: one row per threshold per budget per period; the unique key makes each
-- fire exactly once, however many reservations race past it. The webhook is delivered from
-- this table (`delivered_at`).
CREATE TABLE budget_alerts (
    id            bigserial PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    budget_id     uuid NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    threshold     integer NOT NULL CHECK (threshold IN (80, 100, 120)),
    period_start  timestamptz NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    UNIQUE (budget_id, threshold, period_start)
);
CREATE INDEX budget_alerts_org ON budget_alerts (org_id, at);
CREATE INDEX budget_alerts_undelivered ON budget_alerts (id) WHERE delivered_at IS NULL;

-- Where an organisation's alerts go.
CREATE TABLE webhooks (
    org_id      uuid PRIMARY KEY REFERENCES orgs (id) ON DELETE CASCADE,
    url         text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Policies: `approval` (intents to `capability` need an approval), `max_cost` (no intent
-- may reserve more than `max_cost_micros`) and `deny` (intents to `capability` are refused).
CREATE TABLE policies (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    scope            text NOT NULL CHECK (scope IN ('org', 'team', 'agent')),
    scope_id         text NOT NULL CHECK (length(scope_id) BETWEEN 1 AND 256),
    kind             text NOT NULL CHECK (kind IN ('approval', 'max_cost', 'deny')),
    capability       text CHECK (length(capability) BETWEEN 1 AND 128),
    max_cost_micros  bigint CHECK (max_cost_micros >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (kind <> 'max_cost' OR max_cost_micros IS NOT NULL)
);
CREATE INDEX policies_scope ON policies (org_id, scope, scope_id);

-- Approvals: a request to spend past a budget's 100% (`budget`), or for one intent that a
-- policy holds (`intent`). An approved intent approval admits one reservation.
CREATE TABLE approvals (
    id             uuid PRIMARY KEY,
    org_id         uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('budget', 'intent')),
    budget_id      uuid REFERENCES budgets (id) ON DELETE CASCADE,
    period_start   timestamptz,
    policy_id      uuid REFERENCES policies (id) ON DELETE CASCADE,
    agent          text,
    capability     text,
    amount_micros  bigint,
    status         text NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    requested_by   text NOT NULL,
    decided_by     text,
    reason         text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    decided_at     timestamptz,
    consumed_at    timestamptz
);
CREATE INDEX approvals_org ON approvals (org_id, status, created_at);
CREATE UNIQUE INDEX approvals_budget_once ON approvals (budget_id, period_start) WHERE kind = 'budget';
CREATE UNIQUE INDEX approvals_intent_pending ON approvals (org_id, policy_id, agent, capability)
    WHERE kind = 'intent' AND status = 'pending';

-- The kill switch: each pause or resume is a PauseNotice signed by the gateway's key.
CREATE SEQUENCE pause_seq;
CREATE TABLE pauses (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    scope       text NOT NULL CHECK (scope IN ('org', 'team', 'agent')),
    scope_id    text NOT NULL,
    action      text NOT NULL CHECK (action IN ('pause', 'resume')),
    reason      text NOT NULL,
    subjects    text[] NOT NULL,
    notices     bytea[] NOT NULL,
    seq         bigint NOT NULL,
    actor       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pauses_org ON pauses (org_id, created_at);
-- Which agents are paused now, as the gateway itself enforces it.
CREATE TABLE paused_agents (
    org_id     uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    did        text NOT NULL,
    pause_id   uuid NOT NULL REFERENCES pauses (id) ON DELETE CASCADE,
    PRIMARY KEY (org_id, did)
);

-- The tamper-evident audit log: one hash chain per organisation. Each row's hash covers the
-- previous row's hash and its own content; one writer per chain at a time (an advisory
-- lock) keeps it linear. Checkpoints sign the head of a chain every N rows or T seconds.
CREATE TABLE audit_log (
    org_id      uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    at_ms       bigint NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    subject     text NOT NULL,
    detail      text NOT NULL,
    prev_hash   bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash        bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (org_id, seq)
);

CREATE TABLE audit_checkpoints (
    org_id     uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    hash       bytea NOT NULL CHECK (length(hash) = 32),
    at_ms      bigint NOT NULL,
    signer     text NOT NULL,
    signature  bytea NOT NULL CHECK (length(signature) = 64),
    PRIMARY KEY (org_id, seq)
);
