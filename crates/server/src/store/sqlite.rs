//! The embedded SQLite store (WAL mode).
//!
//! One thread owns the writing connection and appends publications in
//! batches: everything queued while the previous commit ran goes into the
//! next transaction, so throughput grows with load while each publisher is
//! answered only after its publication is committed. Reads use a second
//! connection inside a read transaction, which in WAL mode is a consistent
//! snapshot taken without blocking the writer.
//!
//! A failed write (a full disk, a directory turned read-only) fails only
//! the publications of that transaction, which nobody was told were
//! stored. The writer then closes its connection and opens the database
//! anew for the next write, and the reader follows: a directory that was
//! repaired or remounted in place is written again without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::{
    HistoryPage, MAX_PAGE_BYTES, NewPublication, Position, Range, Retention, StoreError, new_epoch,
};
use crate::publication::Publication;
use duplex_hub::Member;

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS channels (
        name TEXT PRIMARY KEY,
        epoch TEXT NOT NULL,
        last_offset INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS publications (
        channel TEXT NOT NULL,
        offset INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        client TEXT NOT NULL,
        user TEXT NOT NULL,
        name TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (channel, offset)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS publications_ts ON publications (ts);
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
";

/// The most publications one transaction takes.
const MAX_BATCH: usize = 512;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum WriteOp {
    Append(Vec<NewPublication>, Reply<Vec<Publication>>),
    Prune(i64, Reply<usize>),
    SetMeta(String, String, Reply<()>),
}

/// Channel history in `DIR/duplex.sqlite3`.
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::UnboundedSender<WriteOp>,
    reader: Arc<Mutex<Reader>>,
}

/// The database file and how it is opened, shared by both connections.
#[derive(Clone)]
struct Database {
    path: PathBuf,
    /// Bumped each time the writer reopens: the reader then reopens too,
    /// so it never reads a file that was replaced under it.
    generation: Arc<AtomicU64>,
}

impl Database {
    fn open(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }
}

/// The reading connection, opened again after the writer reopened or a
/// read failed.
struct Reader {
    database: Database,
    /// The connection and the writer generation it was opened at.
    conn: Option<(Connection, u64)>,
}

impl Reader {
    fn conn(&mut self) -> Result<&mut Connection> {
        let generation = self.database.generation.load(Ordering::Acquire);
        if self.conn.as_ref().is_none_or(|(_, g)| *g != generation) {
            self.conn = None;
            self.conn = Some((self.database.open()?, generation));
        }
        Ok(&mut self.conn.as_mut().expect("opened above").0)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path, retention: Retention) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let database = Database {
            path: dir.join("duplex.sqlite3"),
            generation: Arc::new(AtomicU64::new(0)),
        };
        let write_conn = Writer::open(&database)?;
        let reader = Reader {
            conn: Some((database.open()?, 0)),
            database: database.clone(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("duplex-sqlite".into())
            .spawn(move || {
                Writer {
                    conn: Some(write_conn),
                    database,
                    cache: HashMap::new(),
                    retention,
                }
                .run(rx)
            })?;
        Ok(Self {
            writer: tx,
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// Appends publications, in order, and returns them with their offsets,
    /// once committed.
    pub async fn append(&self, batch: Vec<NewPublication>) -> Result<Vec<Publication>, StoreError> {
        self.write(|reply| WriteOp::Append(batch, reply)).await
    }

    /// Deletes publications older than `cutoff_ms`; returns how many.
    pub async fn prune(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        self.write(|reply| WriteOp::Prune(cutoff_ms, reply)).await
    }

    /// Stores a small named value (e.g. the generated API key).
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(|reply| WriteOp::SetMeta(key.into(), value.into(), reply))
            .await
    }

    async fn write<T>(&self, op: impl FnOnce(Reply<T>) -> WriteOp) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(op(tx)).map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Reads a named value.
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_owned();
        self.read(move |conn| {
            Ok(conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    /// A channel's position and a page of its history, from one snapshot.
    pub async fn history(&self, channel: &str, range: Range) -> Result<HistoryPage> {
        let channel = channel.to_owned();
        self.read(move |conn| {
            let tx = conn.transaction()?;
            let position = tx
                .query_row("SELECT epoch, last_offset FROM channels WHERE name = ?1", [&channel], |r| {
                    Ok(Position { epoch: r.get(0)?, offset: r.get::<_, i64>(1)? as u64 })
                })
                .optional()?
                .unwrap_or(Position { epoch: String::new(), offset: 0 });
            let epoch: Arc<str> = position.epoch.as_str().into();
            let channel_arc: Arc<str> = channel.as_str().into();
            let columns = "offset, ts, client, user, name, data";
            let publications = match range {
                Range::Before { before, limit } => {
                    let mut stmt = tx.prepare_cached(&format!(
                        "SELECT {columns} FROM publications WHERE channel = ?1 AND offset < ?2 ORDER BY offset DESC LIMIT ?3"
                    ))?;
                    let rows = stmt.query_map(
                        params![channel, before.map(|b| b as i64).unwrap_or(i64::MAX), limit as i64],
                        |r| row(r, &channel_arc, &epoch),
                    )?;
                    let mut v = within_page_bytes(rows)?;
                    v.reverse();
                    v
                }
                Range::After { after, limit } => {
                    let mut stmt = tx.prepare_cached(&format!(
                        "SELECT {columns} FROM publications WHERE channel = ?1 AND offset > ?2 ORDER BY offset ASC LIMIT ?3"
                    ))?;
                    let rows = stmt
                        .query_map(params![channel, after as i64, limit as i64], |r| row(r, &channel_arc, &epoch))?;
                    within_page_bytes(rows)?
                }
            };
            tx.commit()?;
            Ok(HistoryPage { position, publications })
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = reader.lock().unwrap_or_else(|e| e.into_inner());
            let result = f(reader.conn()?);
            if result.is_err() {
                reader.conn = None;
            }
            result
        })
        .await
        .context("the store's reader panicked")?
    }
}

fn row(
    r: &rusqlite::Row<'_>,
    channel: &Arc<str>,
    epoch: &Arc<str>,
) -> rusqlite::Result<Publication> {
    let data: String = r.get(5)?;
    Ok(Publication {
        channel: channel.clone(),
        offset: r.get::<_, i64>(0)? as u64,
        epoch: epoch.clone(),
        ts_ms: r.get(1)?,
        from: Member {
            client: r.get::<_, String>(2)?.into(),
            user: r.get::<_, String>(3)?.into(),
            name: r.get::<_, String>(4)?.into(),
        },
        // Stored by us from a RawValue: always valid JSON.
        data: RawValue::from_string(data)
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null")),
    })
}

/// What a failed write says about the machine.
fn classify(e: anyhow::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    let code = e
        .chain()
        .find_map(|cause| match cause.downcast_ref::<rusqlite::Error>() {
            Some(rusqlite::Error::SqliteFailure(failure, _)) => Some(failure.code),
            _ => None,
        });
    match code {
        Some(DiskFull) => StoreError::DiskFull,
        Some(ReadOnly | CannotOpen | SystemIoFailure | PermissionDenied) => {
            StoreError::NotWritable(format!("{e:#}"))
        }
        _ => StoreError::Failed(format!("{e:#}")),
    }
}

struct Writer {
    /// None after a failed write: opened again before the next one.
    conn: Option<Connection>,
    database: Database,
    /// Channel → (epoch, last offset), as committed.
    cache: HashMap<String, (Arc<str>, u64)>,
    retention: Retention,
}

impl Writer {
    /// Opens the writing connection and makes sure the schema is there.
    fn open(database: &Database) -> Result<Connection> {
        let conn = database.open()?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("cannot initialise {}", database.path.display()))?;
        Ok(conn)
    }

    /// Runs `f` in the writing connection, reopening it first if the last
    /// write failed, and closing it if this one does.
    fn with_conn<T>(
        &mut self,
        f: impl FnOnce(&mut Connection, &mut HashMap<String, (Arc<str>, u64)>, Retention) -> Result<T>,
    ) -> Result<T, StoreError> {
        let reopened = self.conn.is_none();
        if reopened {
            let conn = Self::open(&self.database).map_err(classify)?;
            self.conn = Some(conn);
            self.database.generation.fetch_add(1, Ordering::AcqRel);
        }
        let conn = self.conn.as_mut().expect("opened above");
        match f(conn, &mut self.cache, self.retention) {
            Ok(done) => {
                if reopened {
                    tracing::warn!("the store writes again");
                }
                Ok(done)
            }
            Err(e) => {
                let e = classify(e);
                tracing::error!("storing failed: {e}");
                // What the cache says was committed may not be: read it again.
                self.cache.clear();
                self.conn = None;
                Err(e)
            }
        }
    }

    fn run(mut self, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
        while let Some(op) = rx.blocking_recv() {
            match op {
                WriteOp::Append(mut batch, reply) => {
                    // Take whatever else is waiting into the same transaction.
                    let mut replies = vec![(batch.len(), reply)];
                    let mut others = Vec::new();
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(WriteOp::Append(more, r)) => {
                                replies.push((more.len(), r));
                                batch.extend(more);
                            }
                            Ok(other) => {
                                others.push(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    match self
                        .with_conn(|conn, cache, retention| append(conn, cache, retention, batch))
                    {
                        Ok(mut done) => {
                            for (n, reply) in replies {
                                let rest = done.split_off(n);
                                let _ = reply.send(Ok(std::mem::replace(&mut done, rest)));
                            }
                        }
                        Err(e) => {
                            for (_, reply) in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    for op in others {
                        self.other(op);
                    }
                }
                op => self.other(op),
            }
        }
    }

    fn other(&mut self, op: WriteOp) {
        match op {
            WriteOp::Append(batch, reply) => {
                let _ = reply.send(
                    self.with_conn(|conn, cache, retention| append(conn, cache, retention, batch)),
                );
            }
            WriteOp::Prune(cutoff, reply) => {
                let _ = reply.send(self.with_conn(|conn, _, _| {
                    Ok(conn.execute("DELETE FROM publications WHERE ts < ?1", [cutoff])?)
                }));
            }
            WriteOp::SetMeta(k, v, reply) => {
                let _ = reply.send(self.with_conn(|conn, _, _| {
                    conn.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                        [k, v],
                    )?;
                    Ok(())
                }));
            }
        }
    }
}

/// Appends `batch` in one transaction; `cache` holds each channel's
/// committed position.
fn append(
    conn: &mut Connection,
    cache: &mut HashMap<String, (Arc<str>, u64)>,
    retention: Retention,
    batch: Vec<NewPublication>,
) -> Result<Vec<Publication>> {
    let tx = conn.transaction()?;
    let mut touched: HashMap<String, (Arc<str>, u64)> = HashMap::new();
    let mut out = Vec::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO publications (channel, offset, ts, client, user, name, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for p in batch {
            let (epoch, last) = match touched.get(&p.channel).or_else(|| cache.get(&p.channel)) {
                Some(state) => state.clone(),
                None => tx
                    .query_row(
                        "SELECT epoch, last_offset FROM channels WHERE name = ?1",
                        [&p.channel],
                        |r| Ok((r.get::<_, String>(0)?.into(), r.get::<_, i64>(1)? as u64)),
                    )
                    .optional()?
                    .unwrap_or_else(|| (new_epoch().into(), 0)),
            };
            let offset = last + 1;
            insert.execute(params![
                p.channel,
                offset as i64,
                p.ts_ms,
                &*p.from.client,
                &*p.from.user,
                &*p.from.name,
                p.data.get()
            ])?;
            touched.insert(p.channel.clone(), (epoch.clone(), offset));
            out.push(Publication {
                channel: p.channel.as_str().into(),
                offset,
                epoch,
                ts_ms: p.ts_ms,
                from: p.from,
                data: p.data,
            });
        }
    }
    for (channel, (epoch, last)) in &touched {
        tx.execute(
            "INSERT INTO channels (name, epoch, last_offset) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET last_offset = excluded.last_offset",
            params![channel, &**epoch, *last as i64],
        )?;
        if *last > retention.max_count {
            tx.execute(
                "DELETE FROM publications WHERE channel = ?1 AND offset <= ?2",
                params![channel, (*last - retention.max_count) as i64],
            )?;
        }
    }
    tx.commit()?;
    cache.extend(touched);
    Ok(out)
}

/// Rows in order until their data would pass [`MAX_PAGE_BYTES`] (at
/// least one, so that a page always moves on).
fn within_page_bytes(
    rows: impl Iterator<Item = rusqlite::Result<Publication>>,
) -> rusqlite::Result<Vec<Publication>> {
    let mut bytes = 0;
    let mut page = Vec::new();
    for row in rows {
        let p = row?;
        bytes += p.data.get().len();
        if bytes > MAX_PAGE_BYTES && !page.is_empty() {
            break;
        }
        page.push(p);
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publication::now_ms;

    fn new(channel: &str, n: u32) -> NewPublication {
        NewPublication {
            channel: channel.into(),
            from: Member {
                client: "c".into(),
                user: "u".into(),
                name: "n".into(),
            },
            data: RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap(),
            ts_ms: now_ms(),
        }
    }

    const KEEP_ALL: Retention = Retention {
        max_count: 1_000_000,
        max_age_secs: 86_400,
    };

    #[tokio::test]
    async fn offsets_grow_per_channel_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let epoch = {
            let store = SqliteStore::open(dir.path(), KEEP_ALL).unwrap();
            let a = store
                .append(vec![new("a", 1), new("b", 1), new("a", 2)])
                .await
                .unwrap();
            assert_eq!(a.iter().map(|p| p.offset).collect::<Vec<_>>(), [1, 1, 2]);
            a[0].epoch.to_string()
        };
        let store = SqliteStore::open(dir.path(), KEEP_ALL).unwrap();
        let more = store.append(vec![new("a", 3)]).await.unwrap();
        assert_eq!((more[0].offset, &*more[0].epoch), (3, epoch.as_str()));
        let page = store
            .history(
                "a",
                Range::After {
                    after: 0,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.position, Position { epoch, offset: 3 });
        let data: Vec<&str> = page.publications.iter().map(|p| p.data.get()).collect();
        assert_eq!(data, [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
    }

    #[tokio::test]
    async fn a_page_stops_short_of_its_limit_rather_than_pass_max_page_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), KEEP_ALL).unwrap();
        // Each publication a sixth of the page bytes: six fit, not seven.
        let big = |n: usize| NewPublication {
            data: RawValue::from_string(format!("\"{n}{}\"", "x".repeat(MAX_PAGE_BYTES / 6 - 4)))
                .unwrap(),
            ..new("big", n as u32)
        };
        store.append((1..=9).map(big).collect()).await.unwrap();
        let forwards = store
            .history(
                "big",
                Range::After {
                    after: 0,
                    limit: 100,
                },
            )
            .await
            .unwrap();
        let offsets: Vec<u64> = forwards.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [1, 2, 3, 4, 5, 6]);
        let backwards = store
            .history(
                "big",
                Range::Before {
                    before: None,
                    limit: 100,
                },
            )
            .await
            .unwrap();
        let offsets: Vec<u64> = backwards.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [4, 5, 6, 7, 8, 9]);
        // The last page.
        let one = store
            .history(
                "big",
                Range::After {
                    after: 8,
                    limit: 100,
                },
            )
            .await
            .unwrap();
        assert_eq!(one.publications.len(), 1);
    }

    #[tokio::test]
    async fn pages_backwards_and_forwards() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), KEEP_ALL).unwrap();
        store
            .append((1..=10).map(|n| new("c", n)).collect())
            .await
            .unwrap();
        let offsets = |p: HistoryPage| p.publications.iter().map(|p| p.offset).collect::<Vec<_>>();
        assert_eq!(
            offsets(
                store
                    .history(
                        "c",
                        Range::Before {
                            before: None,
                            limit: 3
                        }
                    )
                    .await
                    .unwrap()
            ),
            [8, 9, 10]
        );
        assert_eq!(
            offsets(
                store
                    .history(
                        "c",
                        Range::Before {
                            before: Some(8),
                            limit: 3
                        }
                    )
                    .await
                    .unwrap()
            ),
            [5, 6, 7]
        );
        assert_eq!(
            offsets(
                store
                    .history("c", Range::After { after: 8, limit: 5 })
                    .await
                    .unwrap()
            ),
            [9, 10]
        );
        let empty = store
            .history("nothing", Range::After { after: 0, limit: 5 })
            .await
            .unwrap();
        assert_eq!(
            empty.position,
            Position {
                epoch: String::new(),
                offset: 0
            }
        );
    }

    #[tokio::test]
    async fn retention_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(
            dir.path(),
            Retention {
                max_count: 5,
                max_age_secs: 60,
            },
        )
        .unwrap();
        store
            .append((1..=12).map(|n| new("c", n)).collect())
            .await
            .unwrap();
        let page = store
            .history(
                "c",
                Range::After {
                    after: 0,
                    limit: 100,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.publications[0].offset, 8);
        assert_eq!(page.publications.len(), 5);
        assert_eq!(page.position.offset, 12);
        // Age: everything is younger than now + 1 s, so a cutoff in the future prunes all.
        assert_eq!(store.prune(now_ms() + 1000).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn concurrent_appends_get_distinct_ordered_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), KEEP_ALL).unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.append(vec![new("c", n)]).await.unwrap()[0].offset },
                )
            })
            .collect();
        let mut offsets = Vec::new();
        for t in tasks {
            offsets.push(t.await.unwrap());
        }
        offsets.sort();
        assert_eq!(offsets, (1..=50).collect::<Vec<_>>());
    }
}
