//! Drives the real simulator over HTTP: the auth variants, validation and pagination rules, faults, and an
//! independent walk of the served API that must add up to exactly `truth()`.

mod support;

// Login, cookies, CSRF, admin keys, base64 passwords, token expiry.
mod auth;
// The app list: limits, the seeded workspace, modes.
mod apps;
// Workflow runs: run lists, cursors, node executions, triggered runs.
mod runs;
// Chat conversations: filters, sorts, pages, details, advanced-chat, the listed model.
mod conversations;
// Chat messages: `first_id` pages and Dify's errors.
mod messages;
// token-costs and daily-messages.
mod statistics;
// Injected errors, delays and a conversation bumped while listing.
mod faults;
// The walk that must equal the truth, and the two truths against each other.
mod truth;
