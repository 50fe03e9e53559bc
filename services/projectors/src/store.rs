//! What every sled-backed projection does with its store: rows encoded as MessagePack, read and
//! changed inside a transaction, the checkpoint kept beside them, and the whole store listed
//! (for comparing a rebuild) or emptied.

use ism_events::projection::Row;
use ism_events::ProjectionError;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

/// The key of the position of the last event applied, in a projection's `meta` tree.
pub(crate) const CHECKPOINT: &[u8] = b"checkpoint";

pub(crate) type TxResult<T> = Result<T, ConflictableTransactionError<ProjectionError>>;

pub(crate) fn storage(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Storage(e.to_string())
}

/// What a failed transaction means to the projection.
pub(crate) fn transaction_failed(e: TransactionError<ProjectionError>) -> ProjectionError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => storage(e),
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("rows always encode")
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ProjectionError> {
    rmp_serde::from_slice(bytes).map_err(|e| ProjectionError::Corrupt(e.to_string()))
}

pub(crate) fn get<T: for<'de> Deserialize<'de>>(
    tree: &TransactionalTree,
    key: &[u8],
) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(v) => decode(&v).map(Some).map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

/// Changes the row at `key`, if there is one.
pub(crate) fn update<T: Serialize + for<'de> Deserialize<'de>>(
    tree: &TransactionalTree,
    key: &[u8],
    f: impl FnOnce(&mut T),
) -> TxResult<()> {
    if let Some(mut row) = get::<T>(tree, key)? {
        f(&mut row);
        tree.insert(key, encode(&row))?;
    }
    Ok(())
}

/// The row at `key`, outside a transaction.
pub(crate) fn row<T: for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, ProjectionError> {
    tree.get(key).map_err(storage)?.map(|v| decode(&v)).transpose()
}

/// Every row of `tree`, in key order.
pub(crate) fn all<T: for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
) -> Result<Vec<T>, ProjectionError> {
    tree.iter().values().map(|v| decode(&v.map_err(storage)?)).collect()
}

/// The key of the newest event schema a projection passed over records of, in its `meta` tree.
const PASSED_OVER_SCHEMA: &[u8] = b"passed_over_schema";

/// Notes, in `meta`, that records of event schema `schema` were passed over (the newest noted
/// is kept).
pub(crate) fn note_passed_over(meta: &sled::Tree, schema: u16) -> Result<(), ProjectionError> {
    let noted = passed_over(meta)?.unwrap_or(0).max(schema);
    meta.insert(PASSED_OVER_SCHEMA, &noted.to_be_bytes()).map_err(storage)?;
    Ok(())
}

/// Whether the projection passed over records this build reads (their schema is at most
/// `schema`, this build's): it must start over to apply them.
pub(crate) fn must_start_over(meta: &sled::Tree, schema: u16) -> Result<bool, ProjectionError> {
    Ok(passed_over(meta)?.is_some_and(|noted| noted <= schema))
}

fn passed_over(meta: &sled::Tree) -> Result<Option<u16>, ProjectionError> {
    Ok(meta
        .get(PASSED_OVER_SCHEMA)
        .map_err(storage)?
        .and_then(|v| v.as_ref().try_into().ok().map(u16::from_be_bytes)))
}

/// The checkpoint in `meta` (0 before any event).
pub(crate) fn checkpoint(meta: &sled::Tree) -> Result<u64, ProjectionError> {
    Ok(meta
        .get(CHECKPOINT)
        .map_err(storage)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

/// Moves only the checkpoint, for an event that changes no row: a plain write of one key is
/// atomic, and were it lost in a crash the event would be replayed and change nothing again.
pub(crate) fn advance(meta: &sled::Tree, position: u64) -> Result<(), ProjectionError> {
    meta.insert(CHECKPOINT, &position.to_be_bytes()).map(|_| ()).map_err(storage)
}

/// Every row of `trees`, keyed `name \0 key`, in order.
pub(crate) fn dump(trees: &[(&'static str, &sled::Tree)]) -> Result<Vec<Row>, ProjectionError> {
    let mut out = Vec::new();
    for (name, tree) in trees {
        for item in tree.iter() {
            let (k, v) = item.map_err(storage)?;
            let mut key = name.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(&k);
            out.push((key, v.to_vec()));
        }
    }
    Ok(out)
}

pub(crate) fn clear(trees: &[(&'static str, &sled::Tree)]) -> Result<(), ProjectionError> {
    for (_, tree) in trees {
        tree.clear().map_err(storage)?;
    }
    Ok(())
}
