CREATE TABLE "coupon_fences" (
	"token" text PRIMARY KEY NOT NULL,
	"coupon_name" text NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "coupon_fences" ADD CONSTRAINT "coupon_fences_coupon_name_coupons_name_fk" FOREIGN KEY ("coupon_name") REFERENCES "public"."coupons"("name") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "coupon_fences_coupon_name_idx" ON "coupon_fences" USING btree ("coupon_name");--> statement-breakpoint
-- Announces a change about to be made to p_coupon (a release, a PATCH): a fence row that lives
-- p_ttl_ms at most, and a notification every replica hears (db/changes.ts), so each forgets what it
-- answers from memory of the coupon; while the fence stands, coupon_snapshot lets no replica learn the
-- coupon again. The change deletes the fence in the transaction that makes it (claim_request_batch,
-- or the PATCH's, coupons/coupons.ts). False, and no fence, when there is no such coupon.
CREATE FUNCTION coupon_fence(p_coupon text, p_token text, p_ttl_ms double precision)
RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
  INSERT INTO coupon_fences (token, coupon_name, expires_at)
  SELECT p_token, c.name, clock_timestamp() + p_ttl_ms * interval '1 millisecond' FROM coupons c WHERE c.name = p_coupon;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM pg_notify('coupon_changes', p_coupon);
  RETURN true;
END
$$;
--> statement-breakpoint
-- What a replica may learn of a coupon for answers from memory (coupons/answers.ts): its sale's state,
-- stock, the clock and up to p_limit + 1 holders, read in one statement so they agree; or only
-- fenced = true while a change of it is announced and not yet made (coupon_fence). A fence past its
-- expiry was given up on: it is broken here, after waiting for a change that is deleting it right now
-- (its row lock), so a change can never commit after a reader learnt the state it replaces. No row:
-- no such coupon.
CREATE FUNCTION coupon_snapshot(p_coupon text, p_limit integer)
RETURNS TABLE (fenced boolean, active boolean, starts_at double precision, ends_at double precision,
  remaining_amount integer, now double precision, claimers json)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz;
BEGIN
  DELETE FROM coupon_fences f WHERE f.token IN (
    SELECT e.token FROM coupon_fences e WHERE e.coupon_name = p_coupon AND e.expires_at <= clock_timestamp()
    ORDER BY e.token FOR UPDATE);
  -- Statements of their own: each reads a snapshot taken after the one before it finished.
  IF EXISTS (SELECT 1 FROM coupon_fences f WHERE f.coupon_name = p_coupon) THEN
    RETURN QUERY SELECT true, NULL::boolean, NULL::float8, NULL::float8, NULL::integer, NULL::float8, NULL::json
      FROM coupons c WHERE c.name = p_coupon;
    RETURN;
  END IF;
  v_now := clock_timestamp();
  -- The holders only when no claim can win now (paused, not open yet, ended, sold out): an open coupon
  -- is not held in memory, and a big one's holders are the costly part of the read.
  RETURN QUERY
  SELECT false, c.active, (extract(epoch FROM c.starts_at) * 1000)::float8, (extract(epoch FROM c.ends_at) * 1000)::float8,
    c.remaining_amount, (extract(epoch FROM v_now) * 1000)::float8,
    CASE WHEN NOT c.active OR c.starts_at > v_now OR c.ends_at <= v_now OR c.remaining_amount = 0 THEN
      (SELECT coalesce(json_agg(s.user_id), '[]'::json)
        FROM (SELECT h.user_id FROM claims h WHERE h.coupon_name = c.name LIMIT p_limit + 1) s)
    END
  FROM coupons c WHERE c.name = p_coupon;
END
$$;
--> statement-breakpoint
-- claim_keyed_batch as in 0004, reading the batch's stored keys once, locked in key order:
-- - a key re-taken meanwhile by another transaction is read as that transaction committed it (the
--   lock waits for it), never deleted as the expired row it replaced (which applied both);
-- - two batches that share keys queue on them in one order, never deadlock;
-- - the sweep (FOR UPDATE SKIP LOCKED) cannot delete a key between this read and the answer, which
--   comes from this read (a second read found it gone and answered no outcome at all).
CREATE OR REPLACE FUNCTION claim_keyed_batch(
  p_coupon text, p_users text[], p_keys text[], p_fingerprints text[], p_ttl_ms double precision
)
RETURNS TABLE (outcome text, decided_at timestamptz, remaining integer, opens_in_ms double precision, replayed boolean)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz;
  v_n integer := coalesce(array_length(p_users, 1), 0);
  v_held idempotency_keys[];
  v_ords integer[];
  v_users text[];
  v_outcomes text[];
  v_at timestamptz[];
  v_opens double precision[];
  v_remaining integer[];
  v_after integer;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_coupon, 0));
  v_now := clock_timestamp();
  SELECT coalesce(array_agg(k ORDER BY k.key), '{}') INTO v_held
  FROM (SELECT * FROM idempotency_keys k WHERE k.key = ANY (p_keys) ORDER BY k.key FOR UPDATE) k;
  -- An expired key is as good as absent: this transaction holds its row, deletes it, decides anew.
  DELETE FROM idempotency_keys k WHERE k.key IN (SELECT h.key FROM unnest(v_held) h WHERE h.expires_at <= v_now);
  -- The requests decided now: no key, or a key without a live stored decision.
  SELECT coalesce(array_agg(r.ord::int ORDER BY r.ord) FILTER (WHERE h.key IS NULL OR h.expires_at <= v_now), '{}'),
    coalesce(array_agg(r.user_id ORDER BY r.ord) FILTER (WHERE h.key IS NULL OR h.expires_at <= v_now), '{}')
  INTO v_ords, v_users
  FROM unnest(p_users, p_keys) WITH ORDINALITY AS r(user_id, key, ord)
  LEFT JOIN unnest(v_held) h ON h.key = r.key;
  SELECT coalesce(array_agg(d.outcome ORDER BY d.n), '{}'), coalesce(array_agg(d.claimed_at ORDER BY d.n), '{}'),
    coalesce(array_agg(d.opens_in_ms ORDER BY d.n), '{}'), min(d.remaining)
  INTO v_outcomes, v_at, v_opens, v_after
  FROM claim_batch(p_coupon, v_users) WITH ORDINALITY AS d(outcome, claimed_at, remaining, opens_in_ms, n);
  -- claim_batch answers with the stock after the whole batch: add back the wins after each row.
  v_remaining := array_fill(NULL::integer, ARRAY[coalesce(array_length(v_ords, 1), 0)]);
  FOR i IN REVERSE coalesce(array_length(v_ords, 1), 0) .. 1 LOOP
    v_remaining[i] := v_after;
    IF v_outcomes[i] = 'created' THEN
      v_after := v_after + 1;
    END IF;
  END LOOP;
  -- In key order, as idempotency_take, so two batches that share keys cannot wait on each other.
  INSERT INTO idempotency_keys (key, fingerprint, outcome, decided_at, remaining, created_at, expires_at)
  SELECT p_keys[f.ord], p_fingerprints[f.ord], f.outcome, f.at, f.remaining, v_now,
    v_now + p_ttl_ms * interval '1 millisecond'
  FROM unnest(v_ords, v_outcomes, v_at, v_remaining) AS f(ord, outcome, at, remaining)
  WHERE p_keys[f.ord] IS NOT NULL AND f.outcome NOT IN ('sale_paused', 'sale_not_started')
  ORDER BY p_keys[f.ord];
  IF array_length(v_ords, 1) = v_n THEN
    RETURN QUERY SELECT f.outcome, f.at, f.remaining, f.opens, false
      FROM unnest(v_outcomes, v_at, v_remaining, v_opens) AS f(outcome, at, remaining, opens);
    RETURN;
  END IF;
  RETURN QUERY
  SELECT
    CASE WHEN f.ord IS NOT NULL THEN f.outcome WHEN h.fingerprint <> r.fp THEN 'idempotency_key_reused' ELSE h.outcome END,
    CASE WHEN f.ord IS NOT NULL THEN f.at WHEN h.fingerprint <> r.fp THEN NULL ELSE h.decided_at END,
    CASE WHEN f.ord IS NOT NULL THEN f.remaining WHEN h.fingerprint <> r.fp THEN NULL ELSE h.remaining END,
    f.opens,
    f.ord IS NULL AND h.fingerprint = r.fp
  FROM unnest(p_keys, p_fingerprints) WITH ORDINALITY AS r(key, fp, ord)
  LEFT JOIN unnest(v_ords, v_outcomes, v_at, v_remaining, v_opens) AS f(ord, outcome, at, remaining, opens)
    ON f.ord = r.ord
  LEFT JOIN unnest(v_held) h ON f.ord IS NULL AND h.key = r.key
  ORDER BY r.ord;
END
$$;
--> statement-breakpoint
-- claim_request_batch with fences: as in 0004, and each release carries the token of the fence that
-- announced it (coupons/fence.ts); the fence is deleted in this transaction, with the release, and a
-- release whose fence is missing or expired is refused as 'expired' (nothing applied, retry-safe, not
-- stored under its key). The six-argument version stays for replicas of the previous version during a
-- rolling upgrade.
CREATE FUNCTION claim_request_batch(
  p_coupon text, p_releases boolean[], p_users text[], p_keys text[], p_fingerprints text[], p_ttl_ms double precision,
  p_fences text[]
)
RETURNS TABLE (outcome text, decided_at timestamptz, remaining integer, opens_in_ms double precision, replayed boolean)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz;
  v_coupon coupons%ROWTYPE;
  v_exists boolean;
  v_closed text;
  v_claim claims%ROWTYPE;
  v_key idempotency_keys%ROWTYPE;
  v_keyed boolean;
  v_released integer := 0;
  v_stock integer;
  v_fenced text[];
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_coupon, 0));
  v_now := clock_timestamp();
  -- The fences of the batch's releases come down with them. One that expired was given up on (a
  -- reader may have broken it and learnt the state before this release): that release is not applied.
  WITH gone AS (
    DELETE FROM coupon_fences f WHERE f.token = ANY (p_fences) AND f.expires_at > v_now RETURNING f.token
  )
  SELECT coalesce(array_agg(gone.token), '{}') INTO v_fenced FROM gone;
  PERFORM idempotency_take(p_keys, p_fingerprints, v_now, p_ttl_ms);
  SELECT * INTO v_coupon FROM coupons c WHERE c.name = p_coupon;
  v_exists := FOUND;
  v_stock := v_coupon.remaining_amount;
  v_closed := CASE
    WHEN NOT v_exists THEN NULL
    WHEN NOT v_coupon.active THEN 'sale_paused'
    WHEN v_coupon.starts_at > v_now THEN 'sale_not_started'
    WHEN v_coupon.ends_at <= v_now THEN 'sale_ended'
  END;
  FOR i IN 1 .. coalesce(array_length(p_users, 1), 0) LOOP
    decided_at := NULL;
    opens_in_ms := NULL;
    replayed := false;
    v_keyed := false;
    IF p_keys[i] IS NOT NULL THEN
      SELECT * INTO v_key FROM idempotency_keys k WHERE k.key = p_keys[i];
      -- Absent only when an earlier request of this batch with the key gave it up (a retry answer).
      IF FOUND AND v_key.fingerprint <> p_fingerprints[i] THEN
        outcome := 'idempotency_key_reused';
        remaining := v_coupon.remaining_amount;
        RETURN NEXT;
        CONTINUE;
      ELSIF FOUND AND v_key.outcome IS NOT NULL THEN
        outcome := v_key.outcome;
        decided_at := v_key.decided_at;
        remaining := v_key.remaining;
        replayed := true;
        RETURN NEXT;
        CONTINUE;
      END IF;
      v_keyed := FOUND;
    END IF;
    IF NOT v_exists THEN
      outcome := 'not_found';
    ELSIF p_releases[i] AND (p_fences[i] IS NULL OR NOT p_fences[i] = ANY (v_fenced)) THEN
      outcome := 'expired';
    ELSIF p_releases[i] THEN
      DELETE FROM claims c WHERE c.user_id = p_users[i] AND c.coupon_name = p_coupon RETURNING * INTO v_claim;
      IF FOUND THEN
        INSERT INTO claim_releases (claim_id, user_id, coupon_name, claimed_at, released_at)
        VALUES (v_claim.id, v_claim.user_id, p_coupon, v_claim.created_at, v_now);
        v_coupon.remaining_amount := v_coupon.remaining_amount + 1;
        v_released := v_released + 1;
        outcome := 'released';
        decided_at := v_now;
      ELSE
        outcome := 'claim_not_found';
      END IF;
    ELSIF EXISTS (SELECT 1 FROM claims c WHERE c.user_id = p_users[i] AND c.coupon_name = p_coupon) THEN
      outcome := 'already_claimed';
    ELSIF v_closed IS NOT NULL THEN
      outcome := v_closed;
      IF v_closed = 'sale_not_started' THEN
        opens_in_ms := extract(epoch FROM v_coupon.starts_at - v_now) * 1000;
      END IF;
    ELSIF v_coupon.remaining_amount = 0 THEN
      outcome := 'sold_out';
    ELSE
      INSERT INTO claims (user_id, coupon_name, created_at) VALUES (p_users[i], p_coupon, v_now);
      v_coupon.remaining_amount := v_coupon.remaining_amount - 1;
      outcome := 'created';
      decided_at := v_now;
    END IF;
    remaining := v_coupon.remaining_amount;
    IF v_keyed AND outcome IN ('sale_paused', 'sale_not_started', 'expired') THEN
      DELETE FROM idempotency_keys k WHERE k.key = p_keys[i];
    ELSIF v_keyed THEN
      UPDATE idempotency_keys k SET outcome = claim_request_batch.outcome,
        decided_at = claim_request_batch.decided_at, remaining = claim_request_batch.remaining
      WHERE k.key = p_keys[i];
    END IF;
    RETURN NEXT;
  END LOOP;
  IF v_exists AND v_coupon.remaining_amount <> v_stock THEN
    UPDATE coupons c SET remaining_amount = v_coupon.remaining_amount WHERE c.name = p_coupon;
  END IF;
  IF v_released > 0 THEN
    PERFORM pg_notify('coupon_changes', p_coupon);
  END IF;
END
$$;
