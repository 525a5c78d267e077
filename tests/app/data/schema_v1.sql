-- The database as schema version 1 of the app created it (its DDL, dumped), with one old conversation.
CREATE TABLE schema_version (
	version INTEGER NOT NULL, 
	PRIMARY KEY (version)
);
CREATE TABLE conversations (
	id INTEGER NOT NULL, 
	title VARCHAR(200), 
	task VARCHAR(64), 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	deleted BOOLEAN NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_conversations_listing ON conversations (deleted, updated_at);
CREATE TABLE images (
	id INTEGER NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	path VARCHAR(255) NOT NULL, 
	mime VARCHAR(32) NOT NULL, 
	size INTEGER NOT NULL, 
	width INTEGER, 
	height INTEGER, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (sha256)
);
CREATE TABLE jobs (
	id INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	args JSON NOT NULL, 
	pid INTEGER, 
	run_dir VARCHAR(1024), 
	created_at DATETIME NOT NULL, 
	started_at DATETIME, 
	finished_at DATETIME, 
	final_metrics JSON, 
	error TEXT, 
	PRIMARY KEY (id), 
	CONSTRAINT ck_jobs_status CHECK (status IN ('queued', 'running', 'done', 'failed', 'aborted'))
);
CREATE INDEX ix_jobs_status ON jobs (status);
CREATE TABLE messages (
	id INTEGER NOT NULL, 
	conversation_id INTEGER NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	text TEXT NOT NULL, 
	task VARCHAR(64), 
	position INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	error TEXT, 
	hidden BOOLEAN NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (conversation_id, position), 
	CONSTRAINT ck_messages_role CHECK (role IN ('user', 'assistant')), 
	CONSTRAINT ck_messages_status CHECK (status IN ('ok', 'done', 'stopped', 'error')), 
	FOREIGN KEY(conversation_id) REFERENCES conversations (id) ON DELETE CASCADE
);
CREATE INDEX ix_messages_conversation_id ON messages (conversation_id);
CREATE TABLE message_images (
	message_id INTEGER NOT NULL, 
	position INTEGER NOT NULL, 
	image_id INTEGER NOT NULL, 
	PRIMARY KEY (message_id, position), 
	FOREIGN KEY(message_id) REFERENCES messages (id) ON DELETE CASCADE, 
	FOREIGN KEY(image_id) REFERENCES images (id)
);
CREATE INDEX ix_message_images_image_id ON message_images (image_id);
CREATE TABLE feedback (
	id INTEGER NOT NULL, 
	message_id INTEGER NOT NULL, 
	value VARCHAR(16), 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT ck_feedback CHECK (value IS NULL OR value IN ('like', 'dislike')), 
	FOREIGN KEY(message_id) REFERENCES messages (id) ON DELETE CASCADE
);
CREATE INDEX ix_feedback_message_id ON feedback (message_id);
CREATE TABLE generations (
	id INTEGER NOT NULL, 
	message_id INTEGER NOT NULL, 
	model VARCHAR(255), 
	parameters JSON NOT NULL, 
	prompt_tokens INTEGER, 
	new_tokens INTEGER, 
	time_to_first_token DOUBLE, 
	duration DOUBLE, 
	status VARCHAR(16) NOT NULL, 
	error TEXT, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (message_id), 
	FOREIGN KEY(message_id) REFERENCES messages (id) ON DELETE CASCADE
);
INSERT INTO schema_version VALUES (1);
INSERT INTO conversations VALUES (1, 'Old chat', 'OCR', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 0);
INSERT INTO messages VALUES (1, 1, 'user', 'Read it', 'OCR', 0, 'ok', NULL, 0, '2026-01-01 00:00:00');
INSERT INTO messages VALUES (2, 1, 'assistant', 'HELLO', 'OCR', 1, 'done', NULL, 0, '2026-01-01 00:00:00');
INSERT INTO feedback VALUES (1, 2, 'like', '2026-01-01 00:00:00');
INSERT INTO generations VALUES (1, 2, 'eve-tiny', '{}', 10, 2, 0.1, 0.2, 'done', NULL, '2026-01-01 00:00:00');
