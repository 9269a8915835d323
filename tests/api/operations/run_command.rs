//! The run command, `scripts/run`, as CI runs it (with the `aigw` binary of
//! this build and the test nats-server, so nothing is built or downloaded
//! twice): it starts aigw with a private NATS on the local PostgreSQL,
//! serves (ready, an admin call, a chat completion through a provider on a
//! mock), and stops cleanly on SIGINT and SIGTERM (exit 0, aigw and its NATS
//! gone, their ports free). A second run reuses the secrets and the data; a
//! run killed outright leaves processes the next run stops; a port that was
//! asked for and is taken is refused with a clear message.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{completion, free_port, nats_server_binary, user, wait_until};

/// One `scripts/run`, its stdout and stderr gathered as they come.
struct Run {
    child: Child,
    output: Arc<Mutex<String>>,
    data: PathBuf,
}

struct Settings {
    data: PathBuf,
    database_url: String,
    listen: String,
    nats_port: u16,
}

impl Settings {
    fn new() -> Self {
        let run = std::env::var("AIGW_TEST_RUN").unwrap_or_else(|_| "local".into());
        let unique = Uuid::now_v7().simple();
        Self {
            data: std::env::temp_dir().join(format!("aigw-test-run-{unique}")),
            database_url: format!("postgres://postgres@127.0.0.1:5432/aigw_t_{run}_{unique}"),
            listen: format!("127.0.0.1:{}", free_port()),
            nats_port: free_port(),
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.listen)
    }
}

fn gather(from: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let mut out = into.lock().unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    });
}

impl Run {
    fn start(s: &Settings) -> Self {
        Self::start_with(s, &[])
    }

    fn start_with(s: &Settings, vars: &[(&str, &str)]) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut cmd = Command::new(root.join("scripts/run"));
        cmd.args(["--debug", "--data-dir"])
            .arg(&s.data)
            .current_dir(root)
            .env("AIGW_BIN", env!("CARGO_BIN_EXE_aigw"))
            .env("AIGW_NATS_SERVER", nats_server_binary())
            .env("AIGW_DATABASE_URL", &s.database_url)
            .env("AIGW_LISTEN", &s.listen)
            .env("AIGW_RUN_NATS_PORT", s.nats_port.to_string())
            .env("AIGW_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in [
            "AIGW_ADMIN_TOKEN",
            "AIGW_MASTER_KEY",
            "AIGW_NATS_URL",
            "AIGW_NAMESPACE",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        gather(child.stdout.take().unwrap(), output.clone());
        gather(child.stderr.take().unwrap(), output.clone());
        Run {
            child,
            output,
            data: s.data.clone(),
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the banner; the admin token it shows.
    async fn wait_running(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.output().contains("Stop with Ctrl-C.") {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("scripts/run ended ({status}):\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "scripts/run did not start:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let out = self.output();
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("Admin token"))
            .unwrap();
        line.split_whitespace().last().unwrap().to_string()
    }

    /// The pids of aigw and NATS, from their pid files.
    fn pids(&self) -> Vec<u32> {
        ["aigw.pid", "nats.pid"]
            .iter()
            .map(|f| {
                std::fs::read_to_string(self.data.join(f))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    fn signal(&self, signal: &str) {
        signal_pid(self.child.id(), signal);
    }

    /// Waits for the script to end; its success.
    async fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "scripts/run did not stop:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Run {
    /// A failed test leaves nothing running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal_pid(self.child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for f in ["aigw.pid", "nats.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.data.join(f)) {
                signal_pid_quietly(pid.trim(), "KILL");
            }
        }
    }
}

fn signal_pid(pid: u32, signal: &str) {
    assert!(
        signal_pid_quietly(&pid.to_string(), signal),
        "kill -{signal} {pid}"
    );
}

fn signal_pid_quietly(pid: &str, signal: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{signal}"), pid])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `pid` runs (a zombie no one reaps does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

fn port_free(addr: &str) -> bool {
    std::net::TcpListener::bind(addr).is_ok()
}

/// The provider's mock: OpenAI chat completions, checking aigw's credential.
async fn provider() -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-run-upstream"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "hello", 3, 2)))
        .mount(&mock)
        .await;
    mock
}

async fn chat(http: &reqwest::Client, base: &str, key: &str) -> Value {
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "m", "messages": user("hi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn stops_cleanly(run: &mut Run, signal: &str, s: &Settings) {
    let pids = run.pids();
    run.signal(signal);
    assert!(
        run.wait_exit(Duration::from_secs(90)).await,
        "a stop on SIG{signal} is not clean:\n{}",
        run.output()
    );
    assert!(run.output().contains("==> stopped"), "{}", run.output());
    for pid in pids {
        assert!(
            !alive(pid),
            "pid {pid} outlived scripts/run:\n{}",
            run.output()
        );
    }
    for addr in [s.listen.clone(), format!("127.0.0.1:{}", s.nats_port)] {
        assert!(port_free(&addr), "{addr} is still taken:\n{}", run.output());
    }
}

#[tokio::test]
async fn the_run_command_serves_stops_cleanly_and_starts_again() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = Settings::new();
    // No idle connections kept: the port check after a stop must not see
    // this client's half of a connection aigw closed.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mock = provider().await;

    // First run: secrets generated and kept, private to the user.
    let mut run = Run::start(&s);
    let token = run.wait_running().await;
    let out = run.output();
    assert!(out.contains(&format!("{}/v1", s.base())), "{out}");
    assert!(out.contains(&format!("{}/admin/", s.base())), "{out}");
    let secrets = s.data.join("secrets.env");
    let kept = std::fs::read_to_string(&secrets).unwrap();
    assert!(kept.contains(&format!("AIGW_ADMIN_TOKEN={token}\n")));
    assert!(kept.contains("AIGW_MASTER_KEY="));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&secrets), 0o600);
    assert_eq!(mode(&s.data), 0o700);
    assert!(
        http.get(format!("{}/ready", s.base()))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );

    // A real call through it.
    let admin = |m: reqwest::Method, p: &str| {
        http.request(m, format!("{}{p}", s.base()))
            .bearer_auth(&token)
    };
    let r = admin(reqwest::Method::POST, "/admin/api/providers")
        .json(
            &json!({"name": "mock", "base_url": format!("{}/v1", mock.uri()),
                      "api_key": "sk-run-upstream", "models": ["m"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let created: Value = admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&json!({"name": "run"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let answer = chat(&http, &s.base(), &key).await;
    assert_eq!(answer["choices"][0]["message"]["content"], "hello");
    stops_cleanly(&mut run, "INT", &s).await;

    // Second run: same secrets, same data (the provider's credential opens
    // with the kept master key), until it is killed outright.
    let mut run = Run::start(&s);
    assert_eq!(run.wait_running().await, token);
    assert!(
        run.output().contains("No problems found."),
        "{}",
        run.output()
    );
    let answer = chat(&http, &s.base(), &key).await;
    assert_eq!(answer["choices"][0]["message"]["content"], "hello");
    let orphans = run.pids();
    run.signal("KILL");
    assert!(!run.wait_exit(Duration::from_secs(10)).await);
    assert!(orphans.iter().all(|p| alive(*p)));

    // Third run: stops what the killed one left, then serves; SIGTERM stops it.
    let mut run = Run::start(&s);
    assert_eq!(run.wait_running().await, token);
    assert!(
        run.output().contains("left running by an earlier run"),
        "{}",
        run.output()
    );
    for pid in orphans {
        wait_until(Duration::from_secs(20), || async move { !alive(pid) }).await;
    }
    chat(&http, &s.base(), &key).await;
    stops_cleanly(&mut run, "TERM", &s).await;
    drop(run);
    let _ = std::fs::remove_dir_all(&s.data);
}

#[tokio::test]
async fn the_run_command_refuses_a_port_that_is_taken() {
    let s = Settings::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut run = Run::start_with(&s, &[("AIGW_LISTEN", &addr)]);
    assert!(!run.wait_exit(Duration::from_secs(60)).await);
    assert!(
        run.output()
            .contains(&format!("AIGW_LISTEN={addr} is taken")),
        "{}",
        run.output()
    );
    // Nothing was started.
    assert!(!s.data.join("nats.pid").exists());
    assert!(port_free(&format!("127.0.0.1:{}", s.nats_port)));
    drop(run);
    let _ = std::fs::remove_dir_all(&s.data);
}
