//! An archive in memory for unit tests: three tiers and a catalog on
//! `memory://` stores, filled with event files written and committed the
//! way the archive stage does it ([`super::flight::Flight`]).

use std::collections::BTreeMap;
use std::time::Instant;

use kusanagi_connectors::storage::TierStore;
use kusanagi_schemas::{ActionDetails, EventTime, GameEvent};

use super::file::write_file;
use super::flight::Flight;
use super::layout::PartitionKey;
use super::open_files::OpenFile;
use super::table::{Record, Row, Table};
use crate::catalog::parquet::read_batches;
use crate::catalog::{Action, Catalog, FileEntry, Progress, Tier, Tiers};

/// One event: (actor, target, event time in microseconds).
pub(crate) type Ev<'a> = (&'a str, &'a str, i64);

/// Tiers and a catalog, all in memory.
pub(crate) struct MemoryArchive {
    pub tiers: Tiers,
    pub catalog_store: TierStore,
    pub catalog: Catalog,
}

fn memory() -> TierStore {
    TierStore::open("memory://", &BTreeMap::new()).expect("memory store")
}

impl MemoryArchive {
    /// An empty archive; `writer` names its catalog's commits.
    pub async fn new(writer: &str) -> Self {
        let catalog_store = memory();
        let catalog = Catalog::open(catalog_store.clone(), writer)
            .await
            .expect("open catalog");
        Self {
            tiers: Tiers::new(memory(), memory(), memory()),
            catalog_store,
            catalog,
        }
    }

    /// Another writer's catalog on the same store.
    pub async fn other_writer(&self, writer: &str) -> Catalog {
        Catalog::open(self.catalog_store.clone(), writer)
            .await
            .expect("open catalog")
    }

    /// Archives `events` (all in the hour of the first) as the next
    /// offsets of `events` partition 0: one hot file, in place.
    pub async fn add_file(&mut self, events: &[Ev<'_>]) -> FileEntry {
        self.catalog.refresh().await.expect("refresh");
        let from = self.catalog.state().next_offset("events", 0);
        let first = from.unwrap_or(0);
        let rows: Vec<Row> = events
            .iter()
            .enumerate()
            .map(|(i, (actor, target, t))| Row {
                record: Record::Event(GameEvent {
                    event_id: format!("e{}", first + i as i64),
                    timestamp: EventTime::from_micros(*t),
                    event_type: "TRADE".into(),
                    actor_id: (*actor).into(),
                    target_id: (*target).into(),
                    action_details: ActionDetails {
                        currency_amount: 100,
                        item_id: None,
                        market_avg_price: None,
                    },
                    context_metadata: Default::default(),
                    tenant_id: "t".into(),
                }),
                partition: 0,
                offset: first + i as i64,
            })
            .collect();
        let key = PartitionKey::of(Table::Events, "t", events[0].2);
        let open = OpenFile {
            rows,
            bytes: 0,
            json_bytes: 100 * events.len() as u64,
            opened_at: Instant::now(),
        };
        let written = write_file(&key, "events", open, 3, 0.01, 0).expect("write");
        let entry = written.entry.clone();
        let hot = self.tiers.store(Tier::Hot);
        let progress = Action::Progress(Progress {
            topic: "events".into(),
            partition: 0,
            from,
            to: first + events.len() as i64,
        });
        let flight = Flight::Written(vec![written])
            .upload(hot)
            .await
            .expect("upload");
        let flight = flight
            .commit(&mut self.catalog, hot, vec![progress])
            .await
            .expect("commit");
        let in_place = flight
            .promote(hot)
            .await
            .map_err(|(_, e)| e)
            .expect("promote");
        assert_eq!(in_place.name(), "in place");
        entry
    }

    /// (actor, target) of every row of every file the catalog lists, read
    /// at its path in its tier, sorted.
    pub async fn rows(&mut self) -> Vec<(String, String)> {
        self.catalog.refresh().await.expect("refresh");
        let mut out = Vec::new();
        for f in self.catalog.state().files() {
            let bytes = self
                .tiers
                .store(f.tier)
                .get(&f.path)
                .await
                .unwrap_or_else(|e| panic!("{} {}: {e}", f.tier, f.path));
            for b in read_batches(bytes).expect("parquet") {
                let col = |name: &str| {
                    b.column_by_name(name)
                        .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
                        .expect(name)
                        .clone()
                };
                let (actors, targets) = (col("actor_id"), col("target_id"));
                for i in 0..b.num_rows() {
                    out.push((actors.value(i).to_owned(), targets.value(i).to_owned()));
                }
            }
        }
        out.sort();
        out
    }

    /// Every object of `tier`, staged ones included, sorted.
    pub async fn objects(&self, tier: Tier) -> Vec<String> {
        let mut paths: Vec<String> = self
            .tiers
            .store(tier)
            .list("")
            .await
            .expect("list")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        paths.sort();
        paths
    }

    /// The paths of the files the catalog lists in `tier`, sorted.
    pub fn listed(&self, tier: Tier) -> Vec<String> {
        let mut paths: Vec<String> = self
            .catalog
            .state()
            .files()
            .filter(|f| f.tier == tier)
            .map(|f| f.path.clone())
            .collect();
        paths.sort();
        paths
    }
}
