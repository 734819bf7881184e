CREATE TABLE "claim_releases" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "claim_releases_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"claim_id" bigint NOT NULL,
	"user_id" text NOT NULL,
	"coupon_name" text NOT NULL,
	"claimed_at" timestamp with time zone NOT NULL,
	"released_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "claim_releases" ADD CONSTRAINT "claim_releases_coupon_name_coupons_name_fk" FOREIGN KEY ("coupon_name") REFERENCES "public"."coupons"("name") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "claim_releases_coupon_name_id_idx" ON "claim_releases" USING btree ("coupon_name","id");--> statement-breakpoint
-- A batch that holds releases as well as claims, decided one request at a time in arrival order under
-- the coupon's lock (releases are rare; claim-only batches keep the set-based claim_batch). A claim
-- follows claim_batch's rules; a release deletes the user's claim (claim_not_found when there is
-- none), records it in claim_releases and gives the unit back to stock, whatever the sale's state.
-- Each row answers with the stock after its own request; decided_at is the claim's or the release's
-- instant. A batch that released anything announces the change to every replica (db/changes.ts) in
-- this transaction: their memory of the coupon as sold out is no longer true.
CREATE FUNCTION claim_release_batch(p_coupon text, p_releases boolean[], p_users text[])
RETURNS TABLE (outcome text, decided_at timestamptz, remaining integer, opens_in_ms double precision)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz;
  v_coupon coupons%ROWTYPE;
  v_closed text;
  v_claim claims%ROWTYPE;
  v_released integer := 0;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_coupon, 0));
  v_now := clock_timestamp();
  SELECT * INTO v_coupon FROM coupons c WHERE c.name = p_coupon;
  IF NOT FOUND THEN
    RETURN QUERY SELECT 'not_found'::text, NULL::timestamptz, NULL::integer, NULL::double precision
      FROM unnest(p_users);
    RETURN;
  END IF;
  v_closed := CASE
    WHEN NOT v_coupon.active THEN 'sale_paused'
    WHEN v_coupon.starts_at > v_now THEN 'sale_not_started'
    WHEN v_coupon.ends_at <= v_now THEN 'sale_ended'
  END;
  FOR i IN 1 .. coalesce(array_length(p_users, 1), 0) LOOP
    decided_at := NULL;
    opens_in_ms := NULL;
    IF p_releases[i] THEN
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
    RETURN NEXT;
  END LOOP;
  UPDATE coupons c SET remaining_amount = v_coupon.remaining_amount
  WHERE c.name = p_coupon AND c.remaining_amount <> v_coupon.remaining_amount;
  IF v_released > 0 THEN
    PERFORM pg_notify('coupon_changes', p_coupon);
  END IF;
END
$$;
