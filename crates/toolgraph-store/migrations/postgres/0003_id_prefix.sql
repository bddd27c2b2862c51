-- Execution ids are looked up by prefix (`toolgraph show 3f2c1a8e`): a range read in byte
-- order. The primary key's index has the database's collation, which may be linguistic
-- (ordering dashes apart); this one compares bytes.
CREATE INDEX executions_id_bytes ON executions (id COLLATE "C");
