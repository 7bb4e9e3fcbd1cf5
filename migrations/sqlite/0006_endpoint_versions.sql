-- An endpoint's version counts the changes of its settings (the API's ETag): a write that
-- names the version it read is applied only while the row still has it, in the same
-- statement (compare and swap), so two operators cannot overwrite each other.
ALTER TABLE hookd_endpoints ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
