-- A task's outcome in words (issue 13: errors carry machine codes and human messages): why it ended the way
-- reason_code says, for the operator reading GET /api/v1/tasks/{id}. Null while a task is not terminal.
ALTER TABLE tasks ADD COLUMN message text;
