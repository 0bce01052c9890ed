-- Setup for the sharding suite (tests/sql/sharding_*.sql), run directly on the primary as the
-- superuser, never through the pooler. Three shard databases, each with a hash-partitioned
-- `data` table holding exactly ONE partition: shard<i> accepts only the rows of
-- (MODULUS 3, REMAINDER i), so PostgreSQL itself rejects any row the pooler misroutes
-- ("no partition of relation "data" found for row").
-- Role and password as in PgCat's own setup (fixtures/pgcat-upstream/query_routing_setup.sql).

DROP DATABASE IF EXISTS shard0;
DROP DATABASE IF EXISTS shard1;
DROP DATABASE IF EXISTS shard2;
DROP ROLE IF EXISTS sharding_user;
CREATE ROLE sharding_user ENCRYPTED PASSWORD 'sharding_user' LOGIN;
CREATE DATABASE shard0 OWNER sharding_user;
CREATE DATABASE shard1 OWNER sharding_user;
CREATE DATABASE shard2 OWNER sharding_user;

\c shard0
SET ROLE sharding_user;
CREATE TABLE data (id bigint, value text) PARTITION BY HASH (id);
CREATE TABLE data_p0 PARTITION OF data FOR VALUES WITH (MODULUS 3, REMAINDER 0);
CREATE SEQUENCE seq;

\c shard1
SET ROLE sharding_user;
CREATE TABLE data (id bigint, value text) PARTITION BY HASH (id);
CREATE TABLE data_p1 PARTITION OF data FOR VALUES WITH (MODULUS 3, REMAINDER 1);
CREATE SEQUENCE seq;

\c shard2
SET ROLE sharding_user;
CREATE TABLE data (id bigint, value text) PARTITION BY HASH (id);
CREATE TABLE data_p2 PARTITION OF data FOR VALUES WITH (MODULUS 3, REMAINDER 2);
CREATE SEQUENCE seq;
