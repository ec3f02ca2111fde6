-- Dify's tables as the database source reads them, written from Dify's Alembic migrations
-- (langgenius/dify, api/migrations/versions/):
--   64b051264f32_init.py                  (2023-05-13, Dify 0.3.0): accounts, tenants, apps, end_users,
--                                          conversations, messages
--   b289e2408ee2_add_workflow.py          (2024-02-19, Dify 0.6.0): workflow_runs, workflow_node_executions,
--                                          messages.workflow_run_id
--   e2eacc9a1b63_add_status_for_message.py (2024-03-21): messages.status, error, message_metadata,
--                                          invoke_from; conversations.invoke_from
--   fd0948688f2d (2025-05-06): end_users.session_id widened
--   workflow_archive_logs (Dify 1.12): from its model, api/models/workflow.py `WorkflowArchiveLog`
--                                          (the rows the run-archiving job leaves behind)
--
-- Kept: the tables and columns the exporter reads, plus the NOT NULL columns that make a row
-- realistic (so a loader that forgets one fails like Dify's schema would). Left out: every other
-- table, indexes except those the queries benefit from, and columns nothing here reads or requires.
-- `gen_random_uuid()` (built in since PostgreSQL 13) stands in for Dify's `uuid_generate_v4()`, so the
-- test cluster needs no `uuid-ossp` extension. Timestamps are `timestamp without time zone` holding UTC,
-- JSON columns are text, exactly as in Dify.

CREATE TABLE tenants (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name varchar(255) NOT NULL,
    plan varchar(255) DEFAULT 'basic' NOT NULL,
    status varchar(255) DEFAULT 'normal' NOT NULL,
    created_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    updated_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    CONSTRAINT tenant_pkey PRIMARY KEY (id)
);

CREATE TABLE accounts (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name varchar(255) NOT NULL,
    email varchar(255) NOT NULL,
    status varchar(16) DEFAULT 'active' NOT NULL,
    created_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    updated_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    CONSTRAINT account_pkey PRIMARY KEY (id)
);

CREATE TABLE apps (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    tenant_id uuid NOT NULL,
    name varchar(255) NOT NULL,
    mode varchar(255) NOT NULL,
    status varchar(255) DEFAULT 'normal' NOT NULL,
    enable_site boolean DEFAULT true NOT NULL,
    enable_api boolean DEFAULT true NOT NULL,
    api_rpm integer DEFAULT 0 NOT NULL,
    api_rph integer DEFAULT 0 NOT NULL,
    created_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    updated_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    CONSTRAINT app_pkey PRIMARY KEY (id)
);
CREATE INDEX app_tenant_id_idx ON apps (tenant_id);

CREATE TABLE end_users (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    tenant_id uuid NOT NULL,
    app_id uuid,
    type varchar(255) NOT NULL,
    external_user_id varchar(255),
    name varchar(255),
    is_anonymous boolean DEFAULT true NOT NULL,
    session_id varchar(255) NOT NULL,
    created_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    updated_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    CONSTRAINT end_user_pkey PRIMARY KEY (id)
);

CREATE TABLE conversations (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    app_id uuid NOT NULL,
    app_model_config_id uuid,
    model_provider varchar(255),
    model_id varchar(255),
    mode varchar(255) NOT NULL,
    name varchar(255) NOT NULL,
    status varchar(255) DEFAULT 'normal' NOT NULL,
    from_source varchar(255) NOT NULL,
    from_end_user_id uuid,
    from_account_id uuid,
    invoke_from varchar(255),
    is_deleted boolean DEFAULT false NOT NULL,
    created_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    updated_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    CONSTRAINT conversation_pkey PRIMARY KEY (id)
);

CREATE TABLE messages (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    app_id uuid NOT NULL,
    model_provider varchar(255),
    model_id varchar(255),
    conversation_id uuid NOT NULL,
    query text NOT NULL,
    message json NOT NULL,
    message_tokens integer DEFAULT 0 NOT NULL,
    message_unit_price numeric(10, 4) NOT NULL,
    answer text NOT NULL,
    answer_tokens integer DEFAULT 0 NOT NULL,
    answer_unit_price numeric(10, 4) NOT NULL,
    provider_response_latency double precision DEFAULT 0 NOT NULL,
    total_price numeric(10, 7),
    currency varchar(255) NOT NULL,
    from_source varchar(255) NOT NULL,
    from_end_user_id uuid,
    from_account_id uuid,
    workflow_run_id uuid,
    status varchar(255) DEFAULT 'normal' NOT NULL,
    invoke_from varchar(255),
    created_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    updated_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    CONSTRAINT message_pkey PRIMARY KEY (id)
);
CREATE INDEX message_app_id_idx ON messages (app_id, created_at);

CREATE TABLE workflow_runs (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    tenant_id uuid NOT NULL,
    app_id uuid NOT NULL,
    sequence_number integer DEFAULT 0 NOT NULL,
    workflow_id uuid NOT NULL,
    type varchar(255) NOT NULL,
    triggered_from varchar(255) NOT NULL,
    version varchar(255) NOT NULL,
    status varchar(255) NOT NULL,
    elapsed_time double precision DEFAULT 0 NOT NULL,
    total_tokens bigint DEFAULT 0 NOT NULL,
    total_steps integer DEFAULT 0,
    created_by_role varchar(255) NOT NULL,
    created_by uuid NOT NULL,
    created_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    finished_at timestamp,
    CONSTRAINT workflow_run_pkey PRIMARY KEY (id)
);
CREATE INDEX workflow_run_triggerd_from_idx ON workflow_runs (tenant_id, app_id, triggered_from);

CREATE TABLE workflow_node_executions (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    tenant_id uuid NOT NULL,
    app_id uuid NOT NULL,
    workflow_id uuid NOT NULL,
    triggered_from varchar(255) NOT NULL,
    workflow_run_id uuid,
    index integer NOT NULL,
    node_id varchar(255) NOT NULL,
    node_type varchar(255) NOT NULL,
    title varchar(255) NOT NULL,
    -- NOT NULL in b289e2408ee2; nullable in today's api/models/workflow.py (`Mapped[str | None]`), and
    -- Dify writes NULL for a node without process data.
    inputs text,
    process_data text,
    outputs text,
    status varchar(255) NOT NULL,
    elapsed_time double precision DEFAULT 0 NOT NULL,
    execution_metadata text,
    created_at timestamp DEFAULT CURRENT_TIMESTAMP(0) NOT NULL,
    created_by_role varchar(255) NOT NULL,
    created_by uuid NOT NULL,
    finished_at timestamp,
    CONSTRAINT workflow_node_execution_pkey PRIMARY KEY (id)
);
CREATE INDEX workflow_node_execution_workflow_run_idx
    ON workflow_node_executions (tenant_id, app_id, workflow_id, triggered_from, workflow_run_id);

CREATE TABLE workflow_archive_logs (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    log_id uuid,
    tenant_id uuid NOT NULL,
    app_id uuid NOT NULL,
    workflow_id uuid NOT NULL,
    workflow_run_id uuid NOT NULL,
    created_by_role varchar(255) NOT NULL,
    created_by uuid NOT NULL,
    log_created_at timestamp,
    log_created_from varchar(255),
    run_version varchar(255) NOT NULL,
    run_status varchar(255) NOT NULL,
    run_triggered_from varchar(255) NOT NULL,
    run_error text,
    run_elapsed_time double precision DEFAULT 0 NOT NULL,
    run_total_tokens bigint DEFAULT 0,
    run_total_steps integer DEFAULT 0,
    run_created_at timestamp NOT NULL,
    run_finished_at timestamp,
    run_exceptions_count integer DEFAULT 0,
    trigger_metadata text,
    archived_at timestamp DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT workflow_archive_log_pkey PRIMARY KEY (id)
);
CREATE INDEX workflow_archive_log_app_idx ON workflow_archive_logs (tenant_id, app_id);
CREATE INDEX workflow_archive_log_run_created_at_idx ON workflow_archive_logs (run_created_at);
