//! `TempPostgres`: a PostgreSQL server of the test's own (`initdb` and
//! `pg_ctl` from the local installation, on a free loopback port, trust
//! authentication, its data in a temp dir), to stop, restart and switch
//! between read-write and read-only (a standby's stand-in). Dropping it
//! stops the server and removes the data.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::harness::free_port;

pub struct TempPostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

/// Where `initdb` and `pg_ctl` are: `AIGW_TEST_PG_BIN`, else `pg_config
/// --bindir`, else Debian's PostgreSQL 15.
fn bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("AIGW_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let debian = Path::new("/usr/lib/postgresql/15/bin");
    if debian.join("initdb").exists() {
        return debian.to_path_buf();
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("no initdb: install PostgreSQL's server binaries or set AIGW_TEST_PG_BIN");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

impl TempPostgres {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("aigw-test-pg-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        // initdb refuses to run as root: run the server as `postgres` then.
        let uid = Command::new("id").arg("-u").output().unwrap();
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let server = Self {
            port: free_port(),
            dir,
            bin: bindir(),
            as_postgres,
        };
        if as_postgres {
            server.run(
                "chown",
                &["postgres:postgres".as_ref(), server.dir.as_os_str()],
            );
        }
        let data = server.dir.join("data");
        server.run(
            &server.bin.join("initdb").display().to_string(),
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        server.start_again();
        server
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let mut command = if self.as_postgres && program != "chown" {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            Command::new(program)
        };
        let out = command.args(args).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data");
        let mut all: Vec<&std::ffi::OsStr> = vec!["-D".as_ref(), data.as_os_str()];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        self.run(&self.bin.join("pg_ctl").display().to_string(), &all);
    }

    /// (Re)starts the server on its port and data.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        self.pg_ctl(&[
            "-o",
            &options,
            "-l",
            &log.display().to_string(),
            "-w",
            "start",
        ]);
    }

    /// Stops the server at once, as a crash would.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }

    /// `host:port` for a URL's host list.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Makes every new session read-only (`default_transaction_read_only`),
    /// or read-write again.
    pub async fn set_read_only(&self, on: bool) {
        let url = format!("postgres://postgres@{}/postgres", self.host());
        let mut conn = PgConnection::connect(&url).await.unwrap();
        sqlx::query("SET default_transaction_read_only = off")
            .execute(&mut conn)
            .await
            .unwrap();
        let value = if on { "on" } else { "off" };
        sqlx::query(&format!(
            "ALTER SYSTEM SET default_transaction_read_only = {value}"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let pg_ctl = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let _ = command
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
