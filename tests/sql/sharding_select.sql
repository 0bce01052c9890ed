\set ON_ERROR_STOP on
-- Sharding suite, part 2 of 2: reads through the pooler, after sharding_insert.sql and after
-- the replica has replayed it (tests/routing_sharding.rs waits). Compared with
-- expected/sharding_select.out. A read sent to the wrong shard finds nothing (the row is only
-- on its own shard), so the expected rows only appear when routing is right;
-- pg_is_in_recovery() shows whether the replica (t) or the primary (f) answered.

\echo -- every row is on its shard: SET SHARD and list the shard
SET SHARD TO '0';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE value = 'suite' ORDER BY id;
SET SHARD TO '1';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE value = 'suite' ORDER BY id;
SET SHARD TO '2';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE value = 'suite' ORDER BY id;

\echo -- SET SHARDING KEY then read the row
SET SHARDING KEY TO '0';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 0 AND value = 'suite';
set sharding key to '-1';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = -1 AND value = 'suite';
SET SHARDING KEY TO -7;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = -7 AND value = 'suite';
SeT sHaRdInG kEy To '-5' \g
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = -5 AND value = 'suite';
SET SHARDING KEY TO '2147483647';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 2147483647 AND value = 'suite';
SET SHARDING KEY TO '-2147483648';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = -2147483648 AND value = 'suite';
SET SHARDING KEY TO '2147483648';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 2147483648 AND value = 'suite';
SET SHARDING KEY TO '-2147483649';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = -2147483649 AND value = 'suite';
SET SHARDING KEY TO '9223372036854775807';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 9223372036854775807 AND value = 'suite';
SET SHARDING KEY TO '-9223372036854775808';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = -9223372036854775808 AND value = 'suite';
SET SHARDING KEY TO '9223372036854775806'   ;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 9223372036854775806 AND value = 'suite';
SET SHARDING KEY TO '-9223372036854775807';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = -9223372036854775807 AND value = 'suite';

\echo -- every SET SERVER ROLE value (key 5 is on shard 2)
SET SHARDING KEY TO '5';
SHOW SERVER ROLE;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 5 AND value = 'suite';
SET SERVER ROLE TO 'primary';
SHOW SERVER ROLE;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 5 AND value = 'suite';
SET SERVER ROLE TO 'replica';
SHOW SERVER ROLE;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 5 AND value = 'suite';
SET SERVER ROLE TO 'any';
SHOW SERVER ROLE;
SELECT current_database(), id FROM data WHERE id = 5 AND value = 'suite';
SET SERVER ROLE TO 'auto';
SHOW SERVER ROLE;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 5 AND value = 'suite';
SET SERVER ROLE TO 'default';
SHOW SERVER ROLE;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 5 AND value = 'suite';

\echo -- SET SERVER ROLE in other spellings
SeT SeRvEr RoLe To 'PrImArY';
ShOw SeRvEr RoLe;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 5 AND value = 'suite';
set server role to 'REPLICA';
show server role;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 5 AND value = 'suite';
SET SERVER ROLE TO primary;
SHOW SERVER ROLE;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 5 AND value = 'suite';
SET SERVER ROLE TO 'replica' \g
SHOW SERVER ROLE \g
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 5 AND value = 'suite';
SET SERVER ROLE TO 'default'  ;
SHOW SERVER ROLE;

\echo -- the role survives a change of shard (key 3 is on shard 1)
SET SERVER ROLE TO 'primary';
SET SHARDING KEY TO '3';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 3 AND value = 'suite';
SET SHARD TO '2';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 5 AND value = 'suite';
SET SERVER ROLE TO 'default';

\echo -- every SET PRIMARY READS value
SET SHARDING KEY TO '7';
SHOW PRIMARY READS;
SET PRIMARY READS TO 'on';
SHOW PRIMARY READS;
SELECT current_database(), id FROM data WHERE id = 7 AND value = 'suite';
SET PRIMARY READS TO 'off';
SHOW PRIMARY READS;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 7 AND value = 'suite';
SET PRIMARY READS TO 'default';
SHOW PRIMARY READS;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 7 AND value = 'suite';
set primary reads to ON;
show primary reads;
SeT PrImArY rEaDs To 'Off' \g
SHOW PRIMARY READS;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 7 AND value = 'suite';
SET PRIMARY READS TO 'default' ;
SHOW PRIMARY READS;

\echo -- a pinned primary ignores primary reads off; a read-write transaction goes to the primary
SET SERVER ROLE TO 'primary';
SET PRIMARY READS TO 'off';
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 7 AND value = 'suite';
SET SERVER ROLE TO 'default';
SET PRIMARY READS TO 'default';
BEGIN;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 7 AND value = 'suite';
COMMIT;
BEGIN READ ONLY;
SELECT current_database(), pg_is_in_recovery(), id FROM data WHERE id = 7 AND value = 'suite';
COMMIT;

\echo -- the session at the end
SHOW SHARD;
SHOW SERVER ROLE;
SHOW PRIMARY READS;
