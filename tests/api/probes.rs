//! The probe listener of the dispatcher and projector processes
//! (`AIGW_PROBE_LISTEN`): `/health` from the start, `/ready` only once the
//! role has started, `/metrics`, and the listener closing with the role.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::harness::{Options, TestEnv, free_port, nats_server_binary, wait_until};

async fn get(env: &TestEnv, url: &str) -> Option<(u16, String)> {
    let r = env
        .http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some((r.status().as_u16(), r.text().await.unwrap_or_default()))
}

async fn status_of(env: &TestEnv, base: &str, path: &str) -> Option<u16> {
    get(env, &format!("{base}{path}")).await.map(|(s, _)| s)
}

/// A nats-server on `port` with JetStream, killed on drop.
struct LateNats(Child, std::path::PathBuf);

impl LateNats {
    fn start(port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("aigw-test-late-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(nats_server_binary())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self(child, dir)
    }
}

impl Drop for LateNats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[tokio::test]
async fn a_dispatcher_is_live_at_once_and_ready_only_once_it_has_started() {
    let mut env = TestEnv::with(Options {
        dispatcher: false,
        ..Options::default()
    })
    .await;
    // Its NATS is not there yet: the dispatcher waits for it to start.
    let nats_port = free_port();
    let probe = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{probe}");
    let mut dispatcher = env.dispatcher_process();
    dispatcher
        .env("AIGW_NATS_URL", format!("nats://127.0.0.1:{nats_port}"))
        .env("AIGW_PROBE_LISTEN", &probe);
    let dispatcher = env.spawn_child(dispatcher);

    wait_until(Duration::from_secs(20), || async {
        status_of(&env, &base, "/health").await == Some(200)
    })
    .await;
    let (status, body) = get(&env, &format!("{base}/ready")).await.unwrap();
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "starting");

    let _nats = LateNats::start(nats_port);
    wait_until(Duration::from_secs(20), || async {
        status_of(&env, &base, "/ready").await == Some(200)
    })
    .await;
    let (status, metrics) = get(&env, &format!("{base}/metrics")).await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("# TYPE"), "{metrics}");
    // Nothing else is served there.
    assert_eq!(status_of(&env, &base, "/v1/models").await, Some(404));

    env.terminate_process(dispatcher);
    let exit = env.wait_exit(dispatcher, Duration::from_secs(20)).await;
    assert!(exit.success(), "{exit:?}");
    assert_eq!(status_of(&env, &base, "/health").await, None);
}

#[tokio::test]
async fn a_projector_serves_its_probes_and_metrics_and_closes_them_when_it_stops() {
    let mut env = TestEnv::with(Options {
        projector: false,
        ..Options::default()
    })
    .await;
    let probe = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{probe}");
    let mut projector = env.role_process("projector");
    projector.env("AIGW_PROBE_LISTEN", &probe);
    let projector = env.spawn_child(projector);

    wait_until(Duration::from_secs(20), || async {
        status_of(&env, &base, "/ready").await == Some(200)
    })
    .await;
    assert_eq!(status_of(&env, &base, "/health").await, Some(200));
    let (_, metrics) = get(&env, &format!("{base}/metrics")).await.unwrap();
    assert!(
        metrics.contains("aigw_projector_quarantined_total"),
        "{metrics}"
    );

    env.terminate_process(projector);
    let exit = env.wait_exit(projector, Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}");
    assert_eq!(status_of(&env, &base, "/ready").await, None);
}

#[tokio::test]
async fn a_probe_address_in_use_stops_the_role_at_once() {
    let mut env = TestEnv::with(Options {
        projector: false,
        ..Options::default()
    })
    .await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut projector = env.role_process("projector");
    projector
        .env("AIGW_PROBE_LISTEN", taken.local_addr().unwrap().to_string())
        .stderr(Stdio::piped());
    let projector = env.spawn_child(projector);
    let exit = env.wait_exit(projector, Duration::from_secs(10)).await;
    assert!(!exit.success());
}

#[tokio::test]
async fn aigw_all_serves_the_probes_of_its_dispatcher_and_projector() {
    let mut env = TestEnv::with(Options {
        dispatcher: false,
        projector: false,
        ..Options::default()
    })
    .await;
    let probe = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{probe}");
    let mut all = env.role_process("all");
    all.env("AIGW_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("AIGW_ADMIN_TOKEN", crate::harness::ADMIN_TOKEN)
        .env("AIGW_PROBE_LISTEN", &probe);
    let all = env.spawn_child(all);
    wait_until(Duration::from_secs(30), || async {
        status_of(&env, &base, "/ready").await == Some(200)
    })
    .await;
    let (_, metrics) = get(&env, &format!("{base}/metrics")).await.unwrap();
    assert!(
        metrics.contains("aigw_projector_quarantined_total"),
        "{metrics}"
    );
    env.terminate_process(all);
    let exit = env.wait_exit(all, Duration::from_secs(30)).await;
    assert!(exit.success(), "{exit:?}");
    assert_eq!(status_of(&env, &base, "/health").await, None);
}
