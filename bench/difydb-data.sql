-- Data for bench/difydb.sh, generated inside PostgreSQL (psql variables: runs, messages, first).
-- Inside the 7-day window from :first: :runs production runs of 20 workflow/advanced-chat apps, 4 node
-- executions each (start, llm, code, llm; the llm rows carry Dify-sized process_data, about 1.2 KB with
-- prompts and the full usage object), and :messages messages of 15 chat-type apps. Rows that must not
-- count come on top: debug runs (10 %) with their nodes, single-step nodes (5 %), debugger messages (5 %),
-- and the 7 days before the window (25 % more runs and messages).
INSERT INTO tenants (id, name) VALUES ('10000000-0000-4000-8000-000000000001', 'Bench');
INSERT INTO accounts (id, name, email)
  SELECT ('ac000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'user' || i, 'user' || i || '@example.com'
  FROM generate_series(1, 20) i;
INSERT INTO end_users (id, tenant_id, type, session_id)
  SELECT ('e0000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, '10000000-0000-4000-8000-000000000001',
         'browser', md5(i::text)
  FROM generate_series(1, 2000) i;
INSERT INTO apps (id, tenant_id, name, mode)
  SELECT ('a0000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, '10000000-0000-4000-8000-000000000001',
         'App ' || i, (ARRAY['workflow', 'advanced-chat', 'chat', 'agent-chat', 'completion',
                              'workflow', 'advanced-chat'])[1 + (i - 1) % 7]
  FROM generate_series(1, 35) i;

CREATE TEMP TABLE run_apps AS
  SELECT (row_number() OVER (ORDER BY id) - 1)::int AS k, id FROM apps WHERE mode IN ('workflow', 'advanced-chat');
CREATE TEMP TABLE chat_apps AS
  SELECT (row_number() OVER (ORDER BY id) - 1)::int AS k, id FROM apps WHERE mode IN ('chat', 'agent-chat', 'completion');

-- i < :runs: the window; then 25 % before it; then 10 % debug runs inside it.
INSERT INTO workflow_runs (id, tenant_id, app_id, workflow_id, type, triggered_from, version, status,
                           created_by_role, created_by, created_at)
  SELECT gen_random_uuid(), '10000000-0000-4000-8000-000000000001', ra.id, 'f0000000-0000-4000-8000-000000000000',
         'workflow', CASE WHEN i >= :runs * 5 / 4 THEN 'debugging' ELSE 'app-run' END, 'v1', 'succeeded',
         CASE WHEN i % 3 = 0 THEN 'account' ELSE 'end_user' END,
         CASE WHEN i % 3 = 0 THEN ('ac000000-0000-4000-8000-' || lpad(to_hex(1 + i % 20), 12, '0'))::uuid
              ELSE ('e0000000-0000-4000-8000-' || lpad(to_hex(1 + i % 2000), 12, '0'))::uuid END,
         :'first'::timestamp
           + CASE WHEN i >= :runs AND i < :runs * 5 / 4 THEN interval '-7 days' ELSE interval '0' END
           + ((i % :runs)::bigint * 7 * 86400 / :runs) * interval '1 second'
  FROM generate_series(0, :runs * 27 / 20 - 1) i
  JOIN run_apps ra ON ra.k = i % 20;

INSERT INTO workflow_node_executions (tenant_id, app_id, workflow_id, triggered_from, workflow_run_id, index,
    node_id, node_type, title, inputs, process_data, status, execution_metadata, created_at,
    created_by_role, created_by)
  SELECT r.tenant_id, r.app_id, r.workflow_id, 'workflow-run', r.id, k, kind || '-' || k, kind, kind, '{}',
         CASE WHEN kind = 'llm' THEN
           '{"model_mode": "chat", "prompts": [{"role": "system", "text": "' || repeat('You are a helpful assistant for the support team. ', 12)
           || '", "files": []}, {"role": "user", "text": "' || repeat(md5(r.id::text), 8)
           || '", "files": []}], "usage": {"prompt_tokens": ' || pt || ', "prompt_unit_price": "2.5", "prompt_price_unit": "0.000001", "prompt_price": "'
           || round(pt * 0.0000025, 7) || '", "completion_tokens": ' || ct
           || ', "completion_unit_price": "10", "completion_price_unit": "0.000001", "completion_price": "'
           || round(ct * 0.00001, 7) || '", "total_tokens": ' || (pt + ct) || ', "total_price": "'
           || round(pt * 0.0000025 + ct * 0.00001, 7)
           || '", "currency": "USD", "latency": 1.234}, "finish_reason": "stop", "model_provider": "langgenius/openai/openai", "model_name": "gpt-4o"}'
         ELSE '{}' END,
         'succeeded',
         CASE WHEN kind = 'llm' THEN '{"total_tokens": ' || (pt + ct) || ', "total_price": "'
           || round(pt * 0.0000025 + ct * 0.00001, 7) || '", "currency": "USD"}' END,
         r.created_at + k * interval '1 second', r.created_by_role, r.created_by
  FROM workflow_runs r
  CROSS JOIN LATERAL (VALUES (1, 'start'), (2, 'llm'), (3, 'code'), (4, 'llm')) AS n(k, kind)
  CROSS JOIN LATERAL (SELECT 100 + abs(hashtext(r.id::text || k)) % 2000 AS pt,
                             abs(hashtext(k || r.id::text)) % 500 AS ct) AS t;

-- 5 % single-step nodes (no run)
INSERT INTO workflow_node_executions (tenant_id, app_id, workflow_id, triggered_from, index, node_id, node_type,
    title, inputs, process_data, status, created_at, created_by_role, created_by)
  SELECT tenant_id, app_id, workflow_id, 'single-step', index, node_id, node_type, title, inputs, process_data,
         status, created_at, created_by_role, created_by
  FROM workflow_node_executions WHERE node_type = 'llm' AND abs(hashtext(id::text)) % 10 = 0;

-- i < :messages: the window; then 25 % before it; then 5 % debugger messages inside it.
INSERT INTO messages (app_id, conversation_id, from_end_user_id, from_account_id, model_provider, model_id, query,
                      message, message_tokens, message_unit_price, answer, answer_tokens, answer_unit_price,
                      total_price, currency, from_source, invoke_from, created_at)
  SELECT ca.id, gen_random_uuid(),
         CASE WHEN i % 4 <> 0 THEN ('e0000000-0000-4000-8000-' || lpad(to_hex(1 + i % 2000), 12, '0'))::uuid END,
         CASE WHEN i % 4 = 0 THEN ('ac000000-0000-4000-8000-' || lpad(to_hex(1 + i % 20), 12, '0'))::uuid END,
         'langgenius/openai/openai', CASE WHEN i % 2 = 0 THEN 'gpt-4o' ELSE 'gpt-4o-mini' END,
         'How do I reset my password?', '[]', 100 + i % 1500, 0.0025, 'You can reset it from the login page.',
         i % 400, 0.01, round((100 + i % 1500) * 0.0000025 + (i % 400) * 0.00001, 7), 'USD',
         CASE WHEN i % 4 = 0 THEN 'console' ELSE 'api' END,
         CASE WHEN i >= :messages * 5 / 4 THEN 'debugger' WHEN i % 4 = 0 THEN 'explore' ELSE 'web-app' END,
         :'first'::timestamp
           + CASE WHEN i >= :messages AND i < :messages * 5 / 4 THEN interval '-7 days' ELSE interval '0' END
           + ((i % :messages)::bigint * 7 * 86400 / :messages) * interval '1 second'
  FROM generate_series(0, :messages * 13 / 10 - 1) i
  JOIN chat_apps ca ON ca.k = i % 15;
