-- SQLite DDL of SuiteCRM 7.14.6's role ACL and SecurityGroups tables (shared/fixtures/suitecrm/schema.sql),
-- empty in the demo: no module has ACL rows there, so every demo user views every record, as in SuiteCRM.
CREATE TABLE IF NOT EXISTS "acl_actions" (
  "id" char(36) NOT NULL, "date_entered" datetime DEFAULT NULL, "date_modified" datetime DEFAULT NULL,
  "modified_user_id" char(36) DEFAULT NULL, "created_by" char(36) DEFAULT NULL, "name" varchar(150) DEFAULT NULL,
  "category" varchar(100) DEFAULT NULL, "acltype" varchar(100) DEFAULT NULL, "aclaccess" integer DEFAULT NULL,
  "deleted" integer DEFAULT NULL, PRIMARY KEY ("id")
);
CREATE TABLE IF NOT EXISTS "acl_roles_actions" (
  "id" varchar(36) NOT NULL, "role_id" varchar(36) DEFAULT NULL, "action_id" varchar(36) DEFAULT NULL,
  "access_override" integer DEFAULT NULL, "date_modified" datetime DEFAULT NULL, "deleted" integer DEFAULT 0,
  PRIMARY KEY ("id")
);
CREATE TABLE IF NOT EXISTS "acl_roles_users" (
  "id" varchar(36) NOT NULL, "role_id" varchar(36) DEFAULT NULL, "user_id" varchar(36) DEFAULT NULL,
  "date_modified" datetime DEFAULT NULL, "deleted" integer DEFAULT 0, PRIMARY KEY ("id")
);
