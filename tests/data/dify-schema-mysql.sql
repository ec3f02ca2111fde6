-- Dify's tables on MySQL (DB_TYPE=mysql, Dify 1.11 and newer), as the database source reads them: the
-- same tables and columns as tests/data/dify-schema.sql, from the same Alembic migrations
-- (langgenius/dify, api/migrations/versions/):
--   64b051264f32_init.py                   (Dify 0.3.0): accounts, tenants, apps, end_users,
--                                           conversations, messages
--   b289e2408ee2_add_workflow.py           (Dify 0.6.0): workflow_runs, workflow_node_executions
--   e2eacc9a1b63_add_status_for_message.py (Dify 0.6.0): messages.status, invoke_from
--   fd0948688f2d (2025-05-06): end_users.session_id widened
--   workflow_archive_logs (Dify 1.12): api/models/workflow.py `WorkflowArchiveLog`
-- with the types those migrations get on MySQL since 1.11, through Dify's own column types
-- (api/models/types.py): `StringUUID` is CHAR(36) (uuid on PostgreSQL), `LongText` is LONGTEXT (text),
-- `sa.JSON` is JSON, `sa.DateTime` is DATETIME, `sa.Boolean` is TINYINT(1), `sa.Numeric` DECIMAL,
-- `sa.Float` DOUBLE. Ids have no server default: Dify's models give them from Python (uuid4).
-- `created_at` defaults to CURRENT_TIMESTAMP as `server_default=func.current_timestamp()` makes it,
-- which on MySQL is the session's local time: a `Message` is inserted without one
-- (api/core/app/apps/message_based_app_generator.py), while workflow runs and node executions get
-- `naive_utc_now()` from Python (api/core/repositories/sqlalchemy_workflow_*_repository.py), so the
-- loader in tests/mariadb writes messages in local time and everything else in UTC, as Dify does.

CREATE TABLE tenants (
    id CHAR(36) NOT NULL,
    name VARCHAR(255) NOT NULL,
    plan VARCHAR(255) DEFAULT 'basic' NOT NULL,
    status VARCHAR(255) DEFAULT 'normal' NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT tenant_pkey PRIMARY KEY (id)
);

CREATE TABLE accounts (
    id CHAR(36) NOT NULL,
    name VARCHAR(255) NOT NULL,
    email VARCHAR(255) NOT NULL,
    status VARCHAR(16) DEFAULT 'active' NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT account_pkey PRIMARY KEY (id)
);

CREATE TABLE apps (
    id CHAR(36) NOT NULL,
    tenant_id CHAR(36) NOT NULL,
    name VARCHAR(255) NOT NULL,
    mode VARCHAR(255) NOT NULL,
    status VARCHAR(255) DEFAULT 'normal' NOT NULL,
    enable_site TINYINT(1) DEFAULT 1 NOT NULL,
    enable_api TINYINT(1) DEFAULT 1 NOT NULL,
    api_rpm INTEGER DEFAULT 0 NOT NULL,
    api_rph INTEGER DEFAULT 0 NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT app_pkey PRIMARY KEY (id)
);
CREATE INDEX app_tenant_id_idx ON apps (tenant_id);

CREATE TABLE end_users (
    id CHAR(36) NOT NULL,
    tenant_id CHAR(36) NOT NULL,
    app_id CHAR(36),
    type VARCHAR(255) NOT NULL,
    external_user_id VARCHAR(255),
    name VARCHAR(255),
    is_anonymous TINYINT(1) DEFAULT 1 NOT NULL,
    session_id VARCHAR(255) NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT end_user_pkey PRIMARY KEY (id)
);

CREATE TABLE conversations (
    id CHAR(36) NOT NULL,
    app_id CHAR(36) NOT NULL,
    app_model_config_id CHAR(36),
    model_provider VARCHAR(255),
    model_id VARCHAR(255),
    mode VARCHAR(255) NOT NULL,
    name VARCHAR(255) NOT NULL,
    status VARCHAR(255) DEFAULT 'normal' NOT NULL,
    from_source VARCHAR(255) NOT NULL,
    from_end_user_id CHAR(36),
    from_account_id CHAR(36),
    invoke_from VARCHAR(255),
    is_deleted TINYINT(1) DEFAULT 0 NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT conversation_pkey PRIMARY KEY (id)
);

CREATE TABLE messages (
    id CHAR(36) NOT NULL,
    app_id CHAR(36) NOT NULL,
    model_provider VARCHAR(255),
    model_id VARCHAR(255),
    conversation_id CHAR(36) NOT NULL,
    query LONGTEXT NOT NULL,
    message JSON NOT NULL,
    message_tokens INTEGER DEFAULT 0 NOT NULL,
    message_unit_price DECIMAL(10, 4) NOT NULL,
    answer LONGTEXT NOT NULL,
    answer_tokens INTEGER DEFAULT 0 NOT NULL,
    answer_unit_price DECIMAL(10, 4) NOT NULL,
    provider_response_latency DOUBLE DEFAULT 0 NOT NULL,
    total_price DECIMAL(10, 7),
    currency VARCHAR(255) NOT NULL,
    from_source VARCHAR(255) NOT NULL,
    from_end_user_id CHAR(36),
    from_account_id CHAR(36),
    workflow_run_id CHAR(36),
    status VARCHAR(255) DEFAULT 'normal' NOT NULL,
    invoke_from VARCHAR(255),
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT message_pkey PRIMARY KEY (id)
);
CREATE INDEX message_app_id_idx ON messages (app_id, created_at);

CREATE TABLE workflow_runs (
    id CHAR(36) NOT NULL,
    tenant_id CHAR(36) NOT NULL,
    app_id CHAR(36) NOT NULL,
    sequence_number INTEGER DEFAULT 0 NOT NULL,
    workflow_id CHAR(36) NOT NULL,
    type VARCHAR(255) NOT NULL,
    triggered_from VARCHAR(255) NOT NULL,
    version VARCHAR(255) NOT NULL,
    status VARCHAR(255) NOT NULL,
    elapsed_time DOUBLE DEFAULT 0 NOT NULL,
    total_tokens BIGINT DEFAULT 0 NOT NULL,
    total_steps INTEGER DEFAULT 0,
    created_by_role VARCHAR(255) NOT NULL,
    created_by CHAR(36) NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    finished_at DATETIME,
    CONSTRAINT workflow_run_pkey PRIMARY KEY (id)
);
CREATE INDEX workflow_run_triggerd_from_idx ON workflow_runs (tenant_id, app_id, triggered_from);

CREATE TABLE workflow_node_executions (
    id CHAR(36) NOT NULL,
    tenant_id CHAR(36) NOT NULL,
    app_id CHAR(36) NOT NULL,
    workflow_id CHAR(36) NOT NULL,
    triggered_from VARCHAR(255) NOT NULL,
    workflow_run_id CHAR(36),
    `index` INTEGER NOT NULL,
    node_id VARCHAR(255) NOT NULL,
    node_type VARCHAR(255) NOT NULL,
    title VARCHAR(255) NOT NULL,
    inputs LONGTEXT,
    process_data LONGTEXT,
    outputs LONGTEXT,
    status VARCHAR(255) NOT NULL,
    elapsed_time DOUBLE DEFAULT 0 NOT NULL,
    execution_metadata LONGTEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    created_by_role VARCHAR(255) NOT NULL,
    created_by CHAR(36) NOT NULL,
    finished_at DATETIME,
    CONSTRAINT workflow_node_execution_pkey PRIMARY KEY (id)
);
CREATE INDEX workflow_node_execution_workflow_run_idx
    ON workflow_node_executions (tenant_id, app_id, workflow_id, triggered_from, workflow_run_id);

CREATE TABLE workflow_archive_logs (
    id CHAR(36) NOT NULL,
    log_id CHAR(36),
    tenant_id CHAR(36) NOT NULL,
    app_id CHAR(36) NOT NULL,
    workflow_id CHAR(36) NOT NULL,
    workflow_run_id CHAR(36) NOT NULL,
    created_by_role VARCHAR(255) NOT NULL,
    created_by CHAR(36) NOT NULL,
    log_created_at DATETIME,
    log_created_from VARCHAR(255),
    run_version VARCHAR(255) NOT NULL,
    run_status VARCHAR(255) NOT NULL,
    run_triggered_from VARCHAR(255) NOT NULL,
    run_error LONGTEXT,
    run_elapsed_time DOUBLE DEFAULT 0 NOT NULL,
    run_total_tokens BIGINT DEFAULT 0,
    run_total_steps INTEGER DEFAULT 0,
    run_created_at DATETIME NOT NULL,
    run_finished_at DATETIME,
    run_exceptions_count INTEGER DEFAULT 0,
    trigger_metadata LONGTEXT,
    archived_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT workflow_archive_log_pkey PRIMARY KEY (id)
);
CREATE INDEX workflow_archive_log_app_idx ON workflow_archive_logs (tenant_id, app_id);
CREATE INDEX workflow_archive_log_run_created_at_idx ON workflow_archive_logs (run_created_at);
