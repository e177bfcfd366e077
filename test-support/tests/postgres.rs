//! The temporary PostgreSQL fixture: it starts, listens on 127.0.0.1 and its
//! Unix socket only, makes isolated databases, and leaves nothing behind.
//! A missing PostgreSQL fails these tests unless `KEYSTORE_TEST_SKIP` names
//! `postgres`. They test the cluster, so they ignore `KEYSTORE_TEST_PG_URL`
//! (an external server is tested through `TestPostgres::external`).

use postgres::{Client, NoTls};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use test_support::postgres::TestPostgres;

fn connect(url: &str) -> Client {
    Client::connect(url, NoTls).expect("connect")
}

fn one(client: &mut Client, query: &str) -> String {
    client.query_one(query, &[]).expect(query).get(0)
}

/// True while `pid` is a live process (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn a_cluster_serves_tcp_on_loopback_and_its_unix_socket() {
    let Some(pg) = TestPostgres::cluster() else {
        return;
    };
    let url = pg.url();
    assert!(
        url.starts_with("postgresql://keystore:"),
        "{}",
        url.replace(pg.password(), "***")
    );
    assert!(url.contains("@127.0.0.1:") && url.ends_with("/keystore"));
    assert!(url.contains(pg.password()));
    assert_eq!(pg.password().len(), 32);
    assert!(pg.password().bytes().all(|b| b.is_ascii_hexdigit()));

    let mut tcp = connect(&url);
    let n: i32 = tcp.query_one("SELECT 1", &[]).expect("SELECT 1").get(0);
    assert_eq!(n, 1);
    assert_eq!(one(&mut tcp, "SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(one(&mut tcp, "SELECT current_database()::text"), "keystore");
    assert_eq!(one(&mut tcp, "SELECT current_user::text"), "keystore");
    assert_eq!(
        one(&mut tcp, "SELECT host(inet_server_addr())"),
        "127.0.0.1"
    );

    let socket_url = pg.socket_url().expect("a cluster has a socket");
    let dir = pg.dir().expect("a cluster has a directory");
    assert!(socket_url.contains(&format!("host={}", dir.join("sock").display())));
    let mut unix = connect(&socket_url);
    let n: i32 = unix.query_one("SELECT 1", &[]).expect("SELECT 1").get(0);
    assert_eq!(n, 1);
    assert_eq!(
        one(&mut unix, "SELECT current_database()::text"),
        "keystore"
    );
    let addr: Option<String> = unix
        .query_one("SELECT host(inet_server_addr())", &[])
        .expect("inet_server_addr")
        .get(0);
    assert_eq!(
        addr, None,
        "over the Unix socket there is no server address"
    );

    let meta = std::fs::metadata(dir).expect("directory");
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_ne!(meta.uid(), 0, "as root the cluster is owned by nobody");
    }
}

#[test]
fn fresh_databases_are_distinct_and_isolated() {
    // `start`: with KEYSTORE_TEST_PG_URL set, this runs on that server.
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let (a, b) = (pg.fresh_database(), pg.fresh_database());
    assert_ne!(a, b);
    let (mut ca, mut cb) = (connect(&a), connect(&b));
    let (da, db) = (
        one(&mut ca, "SELECT current_database()::text"),
        one(&mut cb, "SELECT current_database()::text"),
    );
    assert_ne!(da, db);
    assert!(da.starts_with("keystore_test_") && a.contains(&format!("/{da}")));
    ca.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
        .expect("create in a");
    let seen: i64 = cb
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename = 't'", &[])
        .expect("count")
        .get(0);
    assert_eq!(seen, 0, "b must not see a's tables");
}

#[test]
fn an_external_server_gets_fresh_databases_dropped_after_use() {
    let Some(pg) = TestPostgres::cluster() else {
        return;
    };
    let ext = TestPostgres::external(pg.fresh_database());
    assert_eq!(ext.socket_url(), None);
    assert_eq!(ext.password(), pg.password());
    let url = ext.fresh_database();
    let name = one(&mut connect(&url), "SELECT current_database()::text");
    drop(ext);
    let mut admin = connect(&pg.url());
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "the external fixture drops the databases it made");
}

#[test]
fn drop_stops_the_server_and_removes_the_directory() {
    let Some(pg) = TestPostgres::cluster() else {
        return;
    };
    let pid = pg.pid().expect("the postmaster runs");
    let dir = pg.dir().expect("directory").to_path_buf();
    assert!(alive(pid), "postmaster {pid} runs");
    let mut client = connect(&pg.url());
    drop(pg);
    assert!(!alive(pid), "postmaster {pid} still runs after drop");
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
    assert!(client.simple_query("SELECT 1").is_err());
}
