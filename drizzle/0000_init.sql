CREATE TABLE "claims" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "claims_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"user_id" text NOT NULL,
	"coupon_name" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "claims_user_id_coupon_name_key" UNIQUE("user_id","coupon_name")
);
--> statement-breakpoint
CREATE TABLE "coupons" (
	"name" text PRIMARY KEY NOT NULL,
	"amount" integer NOT NULL,
	"remaining_amount" integer NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "coupons_remaining_amount_check" CHECK ("coupons"."remaining_amount" BETWEEN 0 AND "coupons"."amount")
);
--> statement-breakpoint
ALTER TABLE "claims" ADD CONSTRAINT "claims_coupon_name_coupons_name_fk" FOREIGN KEY ("coupon_name") REFERENCES "public"."coupons"("name") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "claims_coupon_name_id_idx" ON "claims" USING btree ("coupon_name","id");