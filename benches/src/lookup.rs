//! The per-packet lookup candidates, side by side: QPN (or key index) →
//! `Arc` of the object, as the receive path does for every packet. Models
//! of the device's tables (`soft-rdma/src/device/mod.rs`, the QP table;
//! `resources/mr.rs`, the key table) with the same shapes, so that the
//! criterion bench (`benches/lookup.rs`) and the instruction counts
//! (`src/bin/lookup_cg.rs` under callgrind) compare like with like. In
//! release builds the device's `OrderedRwLock` is a `std::sync::RwLock`.

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// What a table holds: it knows its own number (the slot tables check it,
/// so a number reused after a destroy never reaches the old object).
pub struct Obj {
    pub num: u32,
    pub payload: [u64; 4],
}

/// The QPN space the slot tables index: the low 16 bits (`MAX_QP`).
pub const SLOTS: usize = 1 << 16;

pub trait Table: Sync + Send {
    fn name(&self) -> &'static str;
    fn insert(&self, o: Arc<Obj>);
    fn get(&self, num: u32) -> Option<Arc<Obj>>;
}

/// Today's: a `HashMap` under a read-write lock.
#[derive(Default)]
pub struct LockedMap(RwLock<HashMap<u32, Arc<Obj>>>);

impl Table for LockedMap {
    fn name(&self) -> &'static str {
        "rwlock_hashmap"
    }
    fn insert(&self, o: Arc<Obj>) {
        self.0.write().unwrap().insert(o.num, o);
    }
    fn get(&self, num: u32) -> Option<Arc<Obj>> {
        self.0.read().unwrap().get(&num).cloned()
    }
}

/// `dashmap`: a sharded map, one lock per shard.
#[derive(Default)]
pub struct Dash(DashMap<u32, Arc<Obj>>);

impl Table for Dash {
    fn name(&self) -> &'static str {
        "dashmap"
    }
    fn insert(&self, o: Arc<Obj>) {
        self.0.insert(o.num, o);
    }
    fn get(&self, num: u32) -> Option<Arc<Obj>> {
        self.0.get(&num).map(|r| r.value().clone())
    }
}

/// A vector indexed by the number's low 16 bits under a read-write lock.
pub struct LockedSlots(RwLock<Vec<Option<Arc<Obj>>>>);

impl Default for LockedSlots {
    fn default() -> Self {
        LockedSlots(RwLock::new(vec![None; SLOTS]))
    }
}

impl Table for LockedSlots {
    fn name(&self) -> &'static str {
        "rwlock_slots"
    }
    fn insert(&self, o: Arc<Obj>) {
        let i = o.num as usize % SLOTS;
        self.0.write().unwrap()[i] = Some(o);
    }
    fn get(&self, num: u32) -> Option<Arc<Obj>> {
        let slots = self.0.read().unwrap();
        match &slots[num as usize % SLOTS] {
            Some(o) if o.num == num => Some(o.clone()),
            _ => None,
        }
    }
}

/// A fixed array of `ArcSwapOption`, indexed as `LockedSlots`: no lock.
pub struct SwapSlots(Box<[ArcSwapOption<Obj>]>);

impl Default for SwapSlots {
    fn default() -> Self {
        SwapSlots((0..SLOTS).map(|_| ArcSwapOption::empty()).collect())
    }
}

impl Table for SwapSlots {
    fn name(&self) -> &'static str {
        "arcswap_slots"
    }
    fn insert(&self, o: Arc<Obj>) {
        self.0[o.num as usize % SLOTS].store(Some(o));
    }
    fn get(&self, num: u32) -> Option<Arc<Obj>> {
        let o = self.0[num as usize % SLOTS].load_full()?;
        (o.num == num).then_some(o)
    }
}

/// All candidates, each holding `n` objects numbered from 0x11 (the
/// device's first QPN) up.
pub fn filled(n: u32) -> Vec<Box<dyn Table>> {
    let tables: Vec<Box<dyn Table>> = vec![
        Box::<LockedMap>::default(),
        Box::<Dash>::default(),
        Box::<LockedSlots>::default(),
        Box::<SwapSlots>::default(),
    ];
    for t in &tables {
        for num in 0x11..0x11 + n {
            t.insert(Arc::new(Obj {
                num,
                payload: [0; 4],
            }));
        }
    }
    tables
}

/// Look up `iters` numbers cycling through the `n` objects (a stride that
/// is not a power of two, so neighbours are not always in cache); returns
/// how many were found, so nothing is optimised away.
pub fn run(t: &dyn Table, n: u32, iters: u32) -> u64 {
    let mut found = 0u64;
    let mut i = 0u32;
    for _ in 0..iters {
        i = (i + 7919) % n;
        if let Some(o) = t.get(0x11 + i) {
            found += o.payload[0] + 1;
        }
    }
    found
}
