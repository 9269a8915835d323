//! `NatsCluster`: a JetStream cluster of nats-servers on loopback ports, one
//! process per node, each with its own store in a temp dir, for tests that
//! lose and restore nodes. Dropping it kills every node and removes the
//! stores.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::harness::{free_port, nats_server_binary};

pub struct NatsCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

struct Node {
    name: String,
    port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts `size` clustered nodes and waits until JetStream has a meta
    /// leader (streams can be created).
    pub async fn start(size: usize) -> Self {
        let dir =
            std::env::temp_dir().join(format!("aigw-test-cluster-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let routes = ports
            .iter()
            .map(|(_, route)| format!("nats-route://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, (port, route))| {
                let name = format!("n{}", i + 1);
                let store = dir.join(&name);
                let config = dir.join(format!("{name}.conf"));
                std::fs::write(
                    &config,
                    format!(
                        "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
                         jetstream {{ store_dir: \"{}\" }}\n\
                         cluster {{ name: aigw-test\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
                        store.display()
                    ),
                )
                .unwrap();
                Node {
                    name,
                    port: *port,
                    config,
                    child: None,
                }
            })
            .collect();
        let mut cluster = Self { dir, nodes };
        for i in 0..size {
            cluster.start_node(i);
        }
        cluster.wait_jetstream().await;
        cluster
    }

    /// `AIGW_NATS_URL` listing every node as a seed.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the node named `name` (`n1`, `n2`...).
    pub fn index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }

    /// (Re)starts node `i` on its ports and store.
    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} is running", node.name);
        let log = std::fs::File::create(self.dir.join(format!("{}.log", node.name))).unwrap();
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not start", node.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs node `i`.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the cluster can create (and delete) an R3 stream.
    pub async fn wait_jetstream(&self) {
        let client = async_nats::connect(self.url().split(',').next().unwrap())
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let replicas = self.nodes.len().min(3);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let created = js
                .create_stream(async_nats::jetstream::stream::Config {
                    name: "aigw_cluster_probe".into(),
                    subjects: vec!["aigw.cluster.probe".into()],
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await;
            if created.is_ok() {
                let _ = js.delete_stream("aigw_cluster_probe").await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the NATS cluster did not become ready: {created:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
