-- SQLite DDL of the SuiteCRM 7.14.6 tables the crmagi demo uses.
-- Column names and types follow shared/fixtures/suitecrm/schema.sql (the real install), and only the demo creates these.

CREATE TABLE "users" (
  "id" char(36) NOT NULL,
  "user_name" varchar(60) DEFAULT NULL,
  "user_hash" varchar(255) DEFAULT NULL,
  "system_generated_password" integer DEFAULT NULL,
  "pwd_last_changed" datetime DEFAULT NULL,
  "authenticate_id" varchar(100) DEFAULT NULL,
  "sugar_login" integer DEFAULT 1,
  "first_name" varchar(255) DEFAULT NULL,
  "last_name" varchar(255) DEFAULT NULL,
  "is_admin" integer DEFAULT 0,
  "external_auth_only" integer DEFAULT 0,
  "receive_notifications" integer DEFAULT 1,
  "description" text DEFAULT NULL,
  "date_entered" datetime DEFAULT NULL,
  "date_modified" datetime DEFAULT NULL,
  "modified_user_id" char(36) DEFAULT NULL,
  "created_by" char(36) DEFAULT NULL,
  "title" varchar(50) DEFAULT NULL,
  "photo" varchar(255) DEFAULT NULL,
  "department" varchar(50) DEFAULT NULL,
  "phone_home" varchar(50) DEFAULT NULL,
  "phone_mobile" varchar(50) DEFAULT NULL,
  "phone_work" varchar(50) DEFAULT NULL,
  "phone_other" varchar(50) DEFAULT NULL,
  "phone_fax" varchar(50) DEFAULT NULL,
  "status" varchar(100) DEFAULT NULL,
  "address_street" varchar(150) DEFAULT NULL,
  "address_city" varchar(100) DEFAULT NULL,
  "address_state" varchar(100) DEFAULT NULL,
  "address_country" varchar(100) DEFAULT NULL,
  "address_postalcode" varchar(20) DEFAULT NULL,
  "deleted" integer DEFAULT NULL,
  "portal_only" integer DEFAULT 0,
  "show_on_employees" integer DEFAULT 1,
  "employee_status" varchar(100) DEFAULT NULL,
  "messenger_id" varchar(100) DEFAULT NULL,
  "messenger_type" varchar(100) DEFAULT NULL,
  "reports_to_id" char(36) DEFAULT NULL,
  "is_group" integer DEFAULT NULL,
  "factor_auth" integer DEFAULT NULL,
  "factor_auth_interface" varchar(255) DEFAULT NULL,
  PRIMARY KEY ("id")
);
CREATE INDEX "users_idx_user_name" ON "users" ("user_name","is_group","status","last_name");

CREATE TABLE "accounts" (
  "id" char(36) NOT NULL,
  "name" varchar(150) DEFAULT NULL,
  "date_entered" datetime DEFAULT NULL,
  "date_modified" datetime DEFAULT NULL,
  "modified_user_id" char(36) DEFAULT NULL,
  "created_by" char(36) DEFAULT NULL,
  "description" text DEFAULT NULL,
  "deleted" integer DEFAULT 0,
  "assigned_user_id" char(36) DEFAULT NULL,
  "account_type" varchar(50) DEFAULT NULL,
  "industry" varchar(50) DEFAULT NULL,
  "annual_revenue" varchar(100) DEFAULT NULL,
  "phone_fax" varchar(100) DEFAULT NULL,
  "billing_address_street" varchar(150) DEFAULT NULL,
  "billing_address_city" varchar(100) DEFAULT NULL,
  "billing_address_state" varchar(100) DEFAULT NULL,
  "billing_address_postalcode" varchar(20) DEFAULT NULL,
  "billing_address_country" varchar(255) DEFAULT NULL,
  "rating" varchar(100) DEFAULT NULL,
  "phone_office" varchar(100) DEFAULT NULL,
  "phone_alternate" varchar(100) DEFAULT NULL,
  "website" varchar(255) DEFAULT NULL,
  "ownership" varchar(100) DEFAULT NULL,
  "employees" varchar(10) DEFAULT NULL,
  "ticker_symbol" varchar(10) DEFAULT NULL,
  "shipping_address_street" varchar(150) DEFAULT NULL,
  "shipping_address_city" varchar(100) DEFAULT NULL,
  "shipping_address_state" varchar(100) DEFAULT NULL,
  "shipping_address_postalcode" varchar(20) DEFAULT NULL,
  "shipping_address_country" varchar(255) DEFAULT NULL,
  "parent_id" char(36) DEFAULT NULL,
  "sic_code" varchar(10) DEFAULT NULL,
  "campaign_id" char(36) DEFAULT NULL,
  PRIMARY KEY ("id")
);
CREATE INDEX "accounts_idx_accnt_id_del" ON "accounts" ("id","deleted");
CREATE INDEX "accounts_idx_accnt_name_del" ON "accounts" ("name","deleted");
CREATE INDEX "accounts_idx_accnt_assigned_del" ON "accounts" ("deleted","assigned_user_id");
CREATE INDEX "accounts_idx_accnt_parent_id" ON "accounts" ("parent_id");

CREATE TABLE "contacts" (
  "id" char(36) NOT NULL,
  "date_entered" datetime DEFAULT NULL,
  "date_modified" datetime DEFAULT NULL,
  "modified_user_id" char(36) DEFAULT NULL,
  "created_by" char(36) DEFAULT NULL,
  "description" text DEFAULT NULL,
  "deleted" integer DEFAULT 0,
  "assigned_user_id" char(36) DEFAULT NULL,
  "salutation" varchar(255) DEFAULT NULL,
  "first_name" varchar(100) DEFAULT NULL,
  "last_name" varchar(100) DEFAULT NULL,
  "title" varchar(100) DEFAULT NULL,
  "photo" varchar(255) DEFAULT NULL,
  "department" varchar(255) DEFAULT NULL,
  "do_not_call" integer DEFAULT 0,
  "phone_home" varchar(100) DEFAULT NULL,
  "phone_mobile" varchar(100) DEFAULT NULL,
  "phone_work" varchar(100) DEFAULT NULL,
  "phone_other" varchar(100) DEFAULT NULL,
  "phone_fax" varchar(100) DEFAULT NULL,
  "lawful_basis" text DEFAULT NULL,
  "date_reviewed" date DEFAULT NULL,
  "lawful_basis_source" varchar(100) DEFAULT NULL,
  "primary_address_street" varchar(150) DEFAULT NULL,
  "primary_address_city" varchar(100) DEFAULT NULL,
  "primary_address_state" varchar(100) DEFAULT NULL,
  "primary_address_postalcode" varchar(20) DEFAULT NULL,
  "primary_address_country" varchar(255) DEFAULT NULL,
  "alt_address_street" varchar(150) DEFAULT NULL,
  "alt_address_city" varchar(100) DEFAULT NULL,
  "alt_address_state" varchar(100) DEFAULT NULL,
  "alt_address_postalcode" varchar(20) DEFAULT NULL,
  "alt_address_country" varchar(255) DEFAULT NULL,
  "assistant" varchar(75) DEFAULT NULL,
  "assistant_phone" varchar(100) DEFAULT NULL,
  "lead_source" varchar(255) DEFAULT NULL,
  "reports_to_id" char(36) DEFAULT NULL,
  "birthdate" date DEFAULT NULL,
  "campaign_id" char(36) DEFAULT NULL,
  "joomla_account_id" varchar(255) DEFAULT NULL,
  "portal_account_disabled" integer DEFAULT NULL,
  "portal_user_type" varchar(100) DEFAULT 'Single',
  PRIMARY KEY ("id")
);
CREATE INDEX "contacts_idx_cont_last_first" ON "contacts" ("last_name","first_name","deleted");
CREATE INDEX "contacts_idx_contacts_del_last" ON "contacts" ("deleted","last_name");
CREATE INDEX "contacts_idx_cont_del_reports" ON "contacts" ("deleted","reports_to_id","last_name");
CREATE INDEX "contacts_idx_reports_to_id" ON "contacts" ("reports_to_id");
CREATE INDEX "contacts_idx_del_id_user" ON "contacts" ("deleted","id","assigned_user_id");
CREATE INDEX "contacts_idx_cont_assigned" ON "contacts" ("assigned_user_id");

CREATE TABLE "leads" (
  "id" char(36) NOT NULL,
  "date_entered" datetime DEFAULT NULL,
  "date_modified" datetime DEFAULT NULL,
  "modified_user_id" char(36) DEFAULT NULL,
  "created_by" char(36) DEFAULT NULL,
  "description" text DEFAULT NULL,
  "deleted" integer DEFAULT 0,
  "assigned_user_id" char(36) DEFAULT NULL,
  "salutation" varchar(255) DEFAULT NULL,
  "first_name" varchar(100) DEFAULT NULL,
  "last_name" varchar(100) DEFAULT NULL,
  "title" varchar(100) DEFAULT NULL,
  "photo" varchar(255) DEFAULT NULL,
  "department" varchar(100) DEFAULT NULL,
  "do_not_call" integer DEFAULT 0,
  "phone_home" varchar(100) DEFAULT NULL,
  "phone_mobile" varchar(100) DEFAULT NULL,
  "phone_work" varchar(100) DEFAULT NULL,
  "phone_other" varchar(100) DEFAULT NULL,
  "phone_fax" varchar(100) DEFAULT NULL,
  "lawful_basis" text DEFAULT NULL,
  "date_reviewed" date DEFAULT NULL,
  "lawful_basis_source" varchar(100) DEFAULT NULL,
  "primary_address_street" varchar(150) DEFAULT NULL,
  "primary_address_city" varchar(100) DEFAULT NULL,
  "primary_address_state" varchar(100) DEFAULT NULL,
  "primary_address_postalcode" varchar(20) DEFAULT NULL,
  "primary_address_country" varchar(255) DEFAULT NULL,
  "alt_address_street" varchar(150) DEFAULT NULL,
  "alt_address_city" varchar(100) DEFAULT NULL,
  "alt_address_state" varchar(100) DEFAULT NULL,
  "alt_address_postalcode" varchar(20) DEFAULT NULL,
  "alt_address_country" varchar(255) DEFAULT NULL,
  "assistant" varchar(75) DEFAULT NULL,
  "assistant_phone" varchar(100) DEFAULT NULL,
  "converted" integer DEFAULT 0,
  "refered_by" varchar(100) DEFAULT NULL,
  "lead_source" varchar(100) DEFAULT NULL,
  "lead_source_description" text DEFAULT NULL,
  "status" varchar(100) DEFAULT NULL,
  "status_description" text DEFAULT NULL,
  "reports_to_id" char(36) DEFAULT NULL,
  "account_name" varchar(255) DEFAULT NULL,
  "account_description" text DEFAULT NULL,
  "contact_id" char(36) DEFAULT NULL,
  "account_id" char(36) DEFAULT NULL,
  "opportunity_id" char(36) DEFAULT NULL,
  "opportunity_name" varchar(255) DEFAULT NULL,
  "opportunity_amount" varchar(50) DEFAULT NULL,
  "campaign_id" char(36) DEFAULT NULL,
  "birthdate" date DEFAULT NULL,
  "portal_name" varchar(255) DEFAULT NULL,
  "portal_app" varchar(255) DEFAULT NULL,
  "website" varchar(255) DEFAULT NULL,
  PRIMARY KEY ("id")
);
CREATE INDEX "leads_idx_lead_acct_name_first" ON "leads" ("account_name","deleted");
CREATE INDEX "leads_idx_lead_last_first" ON "leads" ("last_name","first_name","deleted");
CREATE INDEX "leads_idx_lead_del_stat" ON "leads" ("last_name","status","deleted","first_name");
CREATE INDEX "leads_idx_lead_opp_del" ON "leads" ("opportunity_id","deleted");
CREATE INDEX "leads_idx_leads_acct_del" ON "leads" ("account_id","deleted");
CREATE INDEX "leads_idx_del_user" ON "leads" ("deleted","assigned_user_id");
CREATE INDEX "leads_idx_lead_assigned" ON "leads" ("assigned_user_id");
CREATE INDEX "leads_idx_lead_contact" ON "leads" ("contact_id");
CREATE INDEX "leads_idx_reports_to" ON "leads" ("reports_to_id");
CREATE INDEX "leads_idx_lead_phone_work" ON "leads" ("phone_work");
CREATE INDEX "leads_idx_leads_id_del" ON "leads" ("id","deleted");

CREATE TABLE "accounts_contacts" (
  "id" varchar(36) NOT NULL,
  "contact_id" varchar(36) DEFAULT NULL,
  "account_id" varchar(36) DEFAULT NULL,
  "date_modified" datetime DEFAULT NULL,
  "deleted" integer DEFAULT 0,
  PRIMARY KEY ("id")
);
CREATE INDEX "accounts_contacts_idx_account_contact" ON "accounts_contacts" ("account_id","contact_id");
CREATE INDEX "accounts_contacts_idx_contid_del_accid" ON "accounts_contacts" ("contact_id","deleted","account_id");

CREATE TABLE "calls" (
  "id" char(36) NOT NULL,
  "name" varchar(50) DEFAULT NULL,
  "date_entered" datetime DEFAULT NULL,
  "date_modified" datetime DEFAULT NULL,
  "modified_user_id" char(36) DEFAULT NULL,
  "created_by" char(36) DEFAULT NULL,
  "description" text DEFAULT NULL,
  "deleted" integer DEFAULT 0,
  "assigned_user_id" char(36) DEFAULT NULL,
  "duration_hours" integer DEFAULT NULL,
  "duration_minutes" integer DEFAULT NULL,
  "date_start" datetime DEFAULT NULL,
  "date_end" datetime DEFAULT NULL,
  "parent_type" varchar(255) DEFAULT NULL,
  "status" varchar(100) DEFAULT 'Planned',
  "direction" varchar(100) DEFAULT NULL,
  "parent_id" char(36) DEFAULT NULL,
  "reminder_time" integer DEFAULT -1,
  "email_reminder_time" integer DEFAULT -1,
  "email_reminder_sent" integer DEFAULT 0,
  "outlook_id" varchar(255) DEFAULT NULL,
  "repeat_type" varchar(36) DEFAULT NULL,
  "repeat_interval" integer DEFAULT 1,
  "repeat_dow" varchar(7) DEFAULT NULL,
  "repeat_until" date DEFAULT NULL,
  "repeat_count" integer DEFAULT NULL,
  "repeat_parent_id" char(36) DEFAULT NULL,
  "recurring_source" varchar(36) DEFAULT NULL,
  PRIMARY KEY ("id")
);
CREATE INDEX "calls_idx_call_name" ON "calls" ("name");
CREATE INDEX "calls_idx_status" ON "calls" ("status");
CREATE INDEX "calls_idx_calls_date_start" ON "calls" ("date_start");
CREATE INDEX "calls_idx_calls_par_del" ON "calls" ("parent_id","parent_type","deleted");
CREATE INDEX "calls_idx_calls_assigned_del" ON "calls" ("deleted","assigned_user_id");

CREATE TABLE "calls_contacts" (
  "id" varchar(36) NOT NULL,
  "call_id" varchar(36) DEFAULT NULL,
  "contact_id" varchar(36) DEFAULT NULL,
  "required" varchar(1) DEFAULT '1',
  "accept_status" varchar(25) DEFAULT 'none',
  "date_modified" datetime DEFAULT NULL,
  "deleted" integer DEFAULT 0,
  PRIMARY KEY ("id")
);
CREATE INDEX "calls_contacts_idx_con_call_call" ON "calls_contacts" ("call_id");
CREATE INDEX "calls_contacts_idx_con_call_con" ON "calls_contacts" ("contact_id");
CREATE INDEX "calls_contacts_idx_call_contact" ON "calls_contacts" ("call_id","contact_id");

CREATE TABLE "calls_leads" (
  "id" varchar(36) NOT NULL,
  "call_id" varchar(36) DEFAULT NULL,
  "lead_id" varchar(36) DEFAULT NULL,
  "required" varchar(1) DEFAULT '1',
  "accept_status" varchar(25) DEFAULT 'none',
  "date_modified" datetime DEFAULT NULL,
  "deleted" integer DEFAULT 0,
  PRIMARY KEY ("id")
);
CREATE INDEX "calls_leads_idx_lead_call_call" ON "calls_leads" ("call_id");
CREATE INDEX "calls_leads_idx_lead_call_lead" ON "calls_leads" ("lead_id");
CREATE INDEX "calls_leads_idx_call_lead" ON "calls_leads" ("call_id","lead_id");

CREATE TABLE "calls_users" (
  "id" varchar(36) NOT NULL,
  "call_id" varchar(36) DEFAULT NULL,
  "user_id" varchar(36) DEFAULT NULL,
  "required" varchar(1) DEFAULT '1',
  "accept_status" varchar(25) DEFAULT 'none',
  "date_modified" datetime DEFAULT NULL,
  "deleted" integer DEFAULT 0,
  PRIMARY KEY ("id")
);
CREATE INDEX "calls_users_idx_usr_call_call" ON "calls_users" ("call_id");
CREATE INDEX "calls_users_idx_usr_call_usr" ON "calls_users" ("user_id");
CREATE INDEX "calls_users_idx_call_users" ON "calls_users" ("call_id","user_id");
