-- agentnet gateway schema, version 2: a reservation batch decided in one statement
-- (`specs/gateway-api.md#exactness`, `gateway/src/reserver.rs`).
--
-- `agentnet_reserve_batch` takes a batch of reservations as parallel arrays, in arrival order,
-- and in the one transaction of the statement that calls it:
--   1. reads each reservation's pause and policies (the first `deny`, else the first
--      `max_cost` it exceeds, by policy id; the first `approval` policy, by id);
--   2. locks every budget that applies to any of them in budget-id order (`FOR UPDATE`, each
--      once), a period that has ended starting over (spend and re-authorisation reset);
--   3. decides each reservation in arrival order against those totals: paused; denied by a
--      policy; held for approval unless an approved approval is left (consumed, and given
--      back if a budget then refuses); refused by the first budget, in id order, that
--      `spent + reserved + amount` would take past 120% (`hard`) or past 100% without
--      re-authorisation; else held on every budget it touches;
--   4. writes the new totals, the reservations, their holds and the 80% alerts (one per
--      budget and period, by the unique key);
-- and returns one row per reservation, in order. The caller's autocommit makes the
-- statement one durable transaction: one round trip per batch.
--
-- `o_outcome` is `held`, `paused`, `denied` (`o_subject` the policy, `o_why` the reason),
-- `approval` (`o_subject` the policy) or `refused` (`o_subject` the budget, `o_hard` past
-- 120%). A held reservation's `o_budgets` are its budgets in id order and `o_alerts` the
-- budgets whose 80% alert it fired. `p_id` are the reservations' ids, given by the caller.
CREATE FUNCTION agentnet_reserve_batch(
    p_org uuid[], p_key text[], p_intent text[], p_agent text[], p_capability text[],
    p_currency text[], p_amount bigint[], p_expires double precision[], p_id uuid[])
RETURNS TABLE (o_index integer, o_outcome text, o_subject uuid, o_hard boolean, o_why text,
               o_budgets uuid[], o_alerts uuid[])
LANGUAGE plpgsql
-- The statements' plans are made once per connection: custom plans, the default for
-- statements with parameters, would be made again on every call (an array's length is
-- known only then), which cost more than running them.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_n integer := coalesce(array_length(p_org, 1), 0);
    -- Per reservation: pause and policies.
    v_paused boolean[];
    v_deny uuid[];
    v_why text[];
    v_hold uuid[];
    -- The locked budgets, in id order, with their totals as the batch goes.
    v_b_id uuid[] := '{}';
    v_b_spent bigint[] := '{}';
    v_b_reserved bigint[] := '{}';
    v_b_limit bigint[] := '{}';
    -- The least total at 80% or more: `total * 5 >= limit * 4` exactly when `total >= warn`.
    v_b_warn bigint[] := '{}';
    v_b_reauth boolean[] := '{}';
    v_b_org uuid[] := '{}';
    v_b_start timestamptz[] := '{}';
    v_b_changed boolean[] := '{}';
    v_nb integer := 0;
    -- Which budgets each reservation touches: a list per reservation, in budget-id order,
    -- of (budget index, next), from v_head.
    v_head integer[];
    v_tail integer[];
    v_pair_b integer[] := '{}';
    v_pair_next integer[] := '{}';
    v_pair_crossed boolean[] := '{}';
    v_np integer := 0;
    -- Decisions.
    v_outcome text[];
    v_subject uuid[];
    v_hard boolean[];
    v_held integer[] := '{}';
    v_nheld integer := 0;
    v_h_res uuid[] := '{}';
    v_h_budget uuid[] := '{}';
    v_h_amount bigint[] := '{}';
    v_nh integer := 0;
    v_crossed uuid[] := '{}';
    v_c_org uuid[] := '{}';
    v_c_start timestamptz[] := '{}';
    v_fired uuid[] := '{}';
    v_row record;
    v_j integer;
    v_k integer;
    v_p integer;
    v_amount bigint;
    v_total bigint;
    v_used uuid;
    v_refused_by uuid;
    v_refused_hard boolean;
BEGIN
    IF v_n = 0 THEN
        RETURN;
    END IF;

    -- 1. Pauses and policies.
    SELECT array_agg(x.paused ORDER BY x.i), array_agg(x.deny ORDER BY x.i),
           array_agg(x.why ORDER BY x.i), array_agg(x.hold ORDER BY x.i)
      INTO v_paused, v_deny, v_why, v_hold
      FROM (SELECT u.i,
                   EXISTS (SELECT 1 FROM paused_agents pa WHERE pa.org_id = u.o AND pa.did = u.a)
                       AS paused,
                   d.id AS deny, d.why, h.id AS hold
              FROM unnest(p_org, p_agent, p_capability, p_amount) WITH ORDINALITY AS u(o, a, c, m, i)
              LEFT JOIN LATERAL (SELECT ag.team_id FROM agents ag
                                  WHERE ag.org_id = u.o AND ag.did = u.a) t ON true
              LEFT JOIN LATERAL (
                  SELECT pol.id,
                         CASE WHEN pol.kind = 'deny' AND pol.capability IS NULL
                                  THEN 'intents are not allowed'
                              WHEN pol.kind = 'deny'
                                  THEN format('intents to `%s` are not allowed', pol.capability)
                              ELSE format('the intent may cost %s micros; the most allowed is %s',
                                          u.m, coalesce(pol.max_cost_micros, 0))
                         END AS why
                    FROM policies pol
                   WHERE pol.org_id = u.o
                     AND (pol.scope = 'org' OR (pol.scope = 'agent' AND pol.scope_id = u.a)
                          OR (pol.scope = 'team' AND pol.scope_id = t.team_id::text))
                     AND (pol.capability IS NULL OR pol.capability = u.c)
                     AND (pol.kind = 'deny'
                          OR (pol.kind = 'max_cost' AND u.m > coalesce(pol.max_cost_micros, 0)))
                   ORDER BY pol.kind = 'deny' DESC, pol.id
                   LIMIT 1) d ON true
              LEFT JOIN LATERAL (
                  SELECT pol.id
                    FROM policies pol
                   WHERE pol.org_id = u.o
                     AND (pol.scope = 'org' OR (pol.scope = 'agent' AND pol.scope_id = u.a)
                          OR (pol.scope = 'team' AND pol.scope_id = t.team_id::text))
                     AND (pol.capability IS NULL OR pol.capability = u.c)
                     AND pol.kind = 'approval'
                   ORDER BY pol.id
                   LIMIT 1) h ON true) x;

    -- 2. Every budget that applies, locked in id order, each once, with the reservations it
    -- applies to (a budget's scope, org and currency never change).
    v_head := array_fill(0, ARRAY[v_n]);
    v_tail := array_fill(0, ARRAY[v_n]);
    FOR v_row IN
        -- Reservations of one org, currency, agent and key (on a hot budget, most of them)
        -- look their budgets up once.
        WITH spenders AS MATERIALIZED (
            SELECT u.o, u.c, u.a, u.k, array_agg(u.i::integer) AS jobs
              FROM unnest(p_org, p_currency, p_agent, p_key) WITH ORDINALITY AS u(o, c, a, k, i)
             GROUP BY u.o, u.c, u.a, u.k),
        pairs AS MATERIALIZED (
            SELECT j.i, b.id
              FROM budgets b
              JOIN spenders u ON b.org_id = u.o AND b.currency = u.c
               AND ((b.scope = 'org' AND b.scope_id = u.o::text)
                 OR (b.scope = 'agent' AND b.scope_id = u.a)
                 OR (b.scope = 'team' AND b.scope_id =
                       (SELECT ag.team_id::text FROM agents ag WHERE ag.org_id = u.o AND ag.did = u.a))
                 OR (b.scope = 'key' AND b.scope_id = u.k))
             CROSS JOIN LATERAL unnest(u.jobs) AS j(i)),
        per_budget AS (
            SELECT pr.id, array_agg(pr.i ORDER BY pr.i) AS jobs FROM pairs pr GROUP BY pr.id)
        SELECT s.*, (s.period <> 'total' AND s.period_start < s.current_start) AS stale
          FROM (SELECT pb.jobs, b.id, b.org_id, b.period, b.period_start, b.spent_micros,
                       b.reserved_micros, b.limit_micros, b.reauthorised,
                       CASE b.period
                           WHEN 'daily' THEN date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                           WHEN 'weekly' THEN date_trunc('week', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                           WHEN 'monthly' THEN date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                           ELSE b.period_start END AS current_start
                  FROM budgets b JOIN per_budget pb ON pb.id = b.id
                 ORDER BY b.id
                   FOR UPDATE OF b) s
    LOOP
        v_nb := v_nb + 1;
        v_b_id[v_nb] := v_row.id;
        v_b_spent[v_nb] := CASE WHEN v_row.stale THEN 0 ELSE v_row.spent_micros END;
        v_b_reserved[v_nb] := v_row.reserved_micros;
        v_b_limit[v_nb] := v_row.limit_micros;
        v_b_warn[v_nb] := (v_row.limit_micros * 4 + 4) / 5;
        v_b_reauth[v_nb] := v_row.reauthorised AND NOT v_row.stale;
        v_b_org[v_nb] := v_row.org_id;
        -- A period that has ended starts over.
        v_b_start[v_nb] := CASE WHEN v_row.stale THEN v_row.current_start
                                ELSE v_row.period_start END;
        v_b_changed[v_nb] := v_row.stale;
        -- Budgets come in id order, so each reservation's list is in id order too.
        FOREACH v_j IN ARRAY v_row.jobs LOOP
            v_np := v_np + 1;
            v_pair_b[v_np] := v_nb;
            v_pair_next[v_np] := 0;
            v_pair_crossed[v_np] := false;
            IF v_head[v_j] = 0 THEN
                v_head[v_j] := v_np;
            ELSE
                v_pair_next[v_tail[v_j]] := v_np;
            END IF;
            v_tail[v_j] := v_np;
        END LOOP;
    END LOOP;

    -- 3. Decided in arrival order.
    v_outcome := array_fill(NULL::text, ARRAY[v_n]);
    v_subject := array_fill(NULL::uuid, ARRAY[v_n]);
    v_hard := array_fill(false, ARRAY[v_n]);
    FOR v_j IN 1..v_n LOOP
        IF v_paused[v_j] THEN
            v_outcome[v_j] := 'paused';
            CONTINUE;
        END IF;
        IF v_deny[v_j] IS NOT NULL THEN
            v_outcome[v_j] := 'denied';
            v_subject[v_j] := v_deny[v_j];
            CONTINUE;
        END IF;
        v_amount := p_amount[v_j];
        v_used := NULL;
        IF v_hold[v_j] IS NOT NULL THEN
            UPDATE approvals SET consumed_at = now()
             WHERE id = (SELECT a.id FROM approvals a
                          WHERE a.org_id = p_org[v_j] AND a.kind = 'intent'
                            AND a.policy_id = v_hold[v_j] AND a.agent = p_agent[v_j]
                            AND a.capability = p_capability[v_j] AND a.status = 'approved'
                            AND a.consumed_at IS NULL AND a.amount_micros >= v_amount
                          ORDER BY a.created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING id INTO v_used;
            IF v_used IS NULL THEN
                v_outcome[v_j] := 'approval';
                v_subject[v_j] := v_hold[v_j];
                CONTINUE;
            END IF;
        END IF;
        v_refused_by := NULL;
        v_p := v_head[v_j];
        WHILE v_p > 0 LOOP
            v_k := v_pair_b[v_p];
            v_total := v_b_spent[v_k] + v_b_reserved[v_k] + v_amount;
            IF v_total > v_b_limit[v_k] + v_b_limit[v_k] / 5 THEN
                v_refused_by := v_b_id[v_k];
                v_refused_hard := true;
                EXIT;
            ELSIF v_total > v_b_limit[v_k] AND NOT v_b_reauth[v_k] THEN
                v_refused_by := v_b_id[v_k];
                v_refused_hard := false;
                EXIT;
            END IF;
            v_p := v_pair_next[v_p];
        END LOOP;
        IF v_refused_by IS NOT NULL THEN
            IF v_used IS NOT NULL THEN
                UPDATE approvals SET consumed_at = NULL WHERE id = v_used;
            END IF;
            v_outcome[v_j] := 'refused';
            v_subject[v_j] := v_refused_by;
            v_hard[v_j] := v_refused_hard;
            CONTINUE;
        END IF;
        v_p := v_head[v_j];
        WHILE v_p > 0 LOOP
            v_k := v_pair_b[v_p];
            v_total := v_b_spent[v_k] + v_b_reserved[v_k];
            v_b_reserved[v_k] := v_b_reserved[v_k] + v_amount;
            v_b_changed[v_k] := true;
            -- 80% crossed: before it, at or past it after.
            IF v_total < v_b_warn[v_k] AND v_total + v_amount >= v_b_warn[v_k] THEN
                v_pair_crossed[v_p] := true;
                v_crossed := v_crossed || v_b_id[v_k];
                v_c_org := v_c_org || v_b_org[v_k];
                v_c_start := v_c_start || v_b_start[v_k];
            END IF;
            v_nh := v_nh + 1;
            v_h_res[v_nh] := p_id[v_j];
            v_h_budget[v_nh] := v_b_id[v_k];
            v_h_amount[v_nh] := v_amount;
            v_p := v_pair_next[v_p];
        END LOOP;
        v_nheld := v_nheld + 1;
        v_held[v_nheld] := v_j;
        v_outcome[v_j] := 'held';
    END LOOP;

    -- 4. New totals, reservations, holds and the 80% alerts, in one statement. The holds'
    -- foreign keys are checked at its end, when the reservations are in.
    WITH w_b AS (
        UPDATE budgets bu
           SET spent_micros = u.s, reserved_micros = u.r, reauthorised = u.re, period_start = u.st
          FROM unnest(v_b_id, v_b_spent, v_b_reserved, v_b_reauth, v_b_start, v_b_changed)
               AS u(id, s, r, re, st, ch)
         WHERE bu.id = u.id AND u.ch),
    r AS (
        INSERT INTO budget_reservations (id, org_id, key_id, intent_id, agent, capability,
                                         currency, amount_micros, status, expires_at)
        SELECT p_id[h.j], p_org[h.j], p_key[h.j], p_intent[h.j], p_agent[h.j], p_capability[h.j],
               p_currency[h.j], p_amount[h.j], 'held', to_timestamp(p_expires[h.j])
          FROM unnest(v_held) AS h(j)),
    hd AS (
        INSERT INTO budget_holds (reservation_id, budget_id, amount_micros)
        SELECT * FROM unnest(v_h_res, v_h_budget, v_h_amount)),
    f AS (
        INSERT INTO budget_alerts (org_id, budget_id, threshold, period_start)
        SELECT c.o, c.b, 80, c.st FROM unnest(v_c_org, v_crossed, v_c_start) AS c(o, b, st)
        ON CONFLICT (budget_id, threshold, period_start) DO NOTHING
        RETURNING budget_id)
    SELECT coalesce(array_agg(f.budget_id), '{}') INTO v_fired FROM f;

    -- One row per reservation, in order.
    FOR v_j IN 1..v_n LOOP
        o_index := v_j;
        o_outcome := v_outcome[v_j];
        o_subject := v_subject[v_j];
        o_hard := v_hard[v_j];
        o_why := CASE WHEN v_outcome[v_j] = 'denied' THEN v_why[v_j] END;
        o_budgets := '{}';
        o_alerts := '{}';
        IF v_outcome[v_j] = 'held' THEN
            v_p := v_head[v_j];
            WHILE v_p > 0 LOOP
                v_k := v_pair_b[v_p];
                o_budgets := o_budgets || v_b_id[v_k];
                IF v_pair_crossed[v_p] AND v_b_id[v_k] = ANY (v_fired) THEN
                    o_alerts := o_alerts || v_b_id[v_k];
                END IF;
                v_p := v_pair_next[v_p];
            END LOOP;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;
