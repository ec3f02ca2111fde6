//! The app list: its limits, its seeded workspace, and the modes that choose its apps.

use chrono::Days;
use dify_sim::{AuthMode, DifySim, SimConfig};

use crate::support::{DAY0, Walker, config, start};

#[tokio::test]
async fn limits_outside_1_to_100_are_refused_not_clamped() {
    let sim = start(config(AuthMode::V1_9_1));
    let w = Walker::new(&sim);
    for limit in ["101", "0", "abc"] {
        let (status, error) = w.get("/apps", &[("limit", limit.into())]).await;
        assert_eq!(status, 400, "limit={limit}");
        assert_eq!(error["code"], "invalid_param");
        assert_eq!(error["status"], 400);
    }
    assert_eq!(w.get("/apps", &[("limit", "100".into())]).await.0, 200);
    let stats = sim.stats();
    assert_eq!(stats.limit_over_100, 1);
    assert_eq!(stats.max_limit_seen, Some(101));
}

#[tokio::test]
async fn same_seed_same_workspace() {
    let a = start(config(AuthMode::V1_9_1));
    let b = start(config(AuthMode::V1_9_1));
    let c = start(SimConfig {
        seed: 8,
        ..config(AuthMode::V1_9_1)
    });
    let last = DAY0 + Days::new(2);
    assert_eq!(a.truth(DAY0, last), b.truth(DAY0, last));
    assert_ne!(a.truth(DAY0, last), c.truth(DAY0, last));
    assert!(a.truth(DAY0, DAY0).iter().all(|r| r.usage_date == DAY0));
    let (wa, wb) = (Walker::new(&a), Walker::new(&b));
    let app = wa
        .apps()
        .await
        .into_iter()
        .find(|x| x["mode"] == "workflow")
        .unwrap();
    let id = app["id"].as_str().unwrap();
    let run = wa.runs(id, Some("app-run")).await.remove(0);
    let path = format!(
        "/apps/{id}/workflow-runs/{}/node-executions",
        run["id"].as_str().unwrap()
    );
    assert_eq!(wa.ok(&path, &[]).await, wb.ok(&path, &[]).await);
}

#[tokio::test]
async fn modes_choose_the_apps_and_an_unknown_mode_is_listed() {
    let sim = start(SimConfig {
        modes: vec!["chat".into(), "agent".into()],
        messages_per_conversation: 4,
        ..config(AuthMode::V1_9_1)
    });
    let w = Walker::new(&sim);
    let apps = w.apps().await;
    let modes: Vec<&str> = apps.iter().map(|a| a["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["agent", "chat"]);
    assert!(apps[0]["model_config"]["model"]["name"].is_string());
    let chat_id = apps[1]["id"].as_str().unwrap();
    let listed = w
        .ok(
            &format!("/apps/{chat_id}/chat-conversations"),
            &[("limit", "100".into())],
        )
        .await;
    let counts: Vec<u64> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message_count"].as_u64().unwrap())
        .collect();
    assert!(
        counts.iter().all(|&n| n == 4 || n == 5),
        "{counts:?}: 4 a conversation, one more after the window"
    );
    let error = DifySim::start(SimConfig {
        modes: vec!["chatbot".into()],
        ..config(AuthMode::V1_9_1)
    })
    .expect_err("an unknown mode is refused");
    assert!(error.to_string().contains("chatbot"), "{error}");
}
