-- A row PostgreSQL refused for a reason no conversion rule foresaw,
-- isolated by splitting its batch: recorded with PostgreSQL's message.
ALTER TABLE cutover.rejects DROP CONSTRAINT rejects_reason_check;
ALTER TABLE cutover.rejects ADD CONSTRAINT rejects_reason_check CHECK (reason IN ('orphan',
    'invalid_timestamp', 'invalid_boolean', 'invalid_json', 'nul_char', 'invalid_utf8',
    'invalid_integer', 'check_violation', 'not_null', 'unique_violation', 'refused'));
