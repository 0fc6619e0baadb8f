//! Grid values: a manifest setting that is one value or a list of values to sweep.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A manifest value that may be one value or a list of values to sweep.
#[derive(Debug, Clone, PartialEq)]
pub enum Grid<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> Grid<T> {
    pub fn values(&self) -> Vec<T> {
        match self {
            Grid::One(v) => vec![v.clone()],
            Grid::Many(v) => v.clone(),
        }
    }
    pub fn is_sweep(&self) -> bool {
        matches!(self, Grid::Many(v) if v.len() > 1)
    }
}

impl<T: Serialize> Serialize for Grid<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Grid::One(v) => v.serialize(s),
            Grid::Many(v) => v.serialize(s),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Grid<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = toml::Value::deserialize(d)?;
        match v {
            toml::Value::Array(items) => {
                if items.is_empty() {
                    return Err(D::Error::custom(
                        "an empty list sweeps nothing; give at least one value",
                    ));
                }
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, x)| {
                        T::deserialize(x)
                            .map_err(|e| D::Error::custom(format!("list item {i}: {e}")))
                    })
                    .collect::<std::result::Result<Vec<T>, _>>()
                    .map(Grid::Many)
            }
            other => T::deserialize(other)
                .map(Grid::One)
                .map_err(|e| D::Error::custom(format!("{e} (a single value or a list of them)"))),
        }
    }
}
