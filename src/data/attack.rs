//! The ATT&CK catalog from a STIX 2.1 bundle (`enterprise-attack.json` or a subset of it):
//! technique id, name, description, tactics, sub-technique parent and the revoked-by chain.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Technique {
    pub id: String,
    pub name: String,
    pub description: String,
    pub tactics: Vec<String>,
    pub parent: Option<String>,
    pub revoked: bool,
    pub deprecated: bool,
    /// The ATT&CK id this one was revoked in favour of (one hop).
    pub revoked_by: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    pub techniques: BTreeMap<String, Technique>,
}

#[derive(Deserialize)]
struct Bundle {
    #[serde(default)]
    objects: Vec<serde_json::Value>,
}

fn attack_id(obj: &serde_json::Value) -> Option<String> {
    obj.get("external_references")?
        .as_array()?
        .iter()
        .find(|r| r.get("source_name").and_then(|s| s.as_str()) == Some("mitre-attack"))?
        .get("external_id")?
        .as_str()
        .map(str::to_string)
}

impl Catalog {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::data(format!(
                "cannot read the ATT&CK bundle {}: {e}. Get enterprise-attack.json from the mitre/cti repository (or run `synthcti data pull`), or set `data.attack = \"none\"`",
                path.display()
            ))
        })?;
        let bundle: Bundle = serde_json::from_slice(&bytes).map_err(|e| {
            Error::data(format!(
                "{} is not a valid STIX bundle (line {}, column {}): {e}. If the file is truncated, download it again",
                path.display(),
                e.line(),
                e.column()
            ))
        })?;
        Self::from_objects(&bundle.objects).map_err(|e| e.context(path.display()))
    }

    pub fn from_objects(objects: &[serde_json::Value]) -> Result<Self> {
        let mut by_stix: HashMap<String, String> = HashMap::new();
        let mut techniques = BTreeMap::new();
        for o in objects {
            if o.get("type").and_then(|t| t.as_str()) != Some("attack-pattern") {
                continue;
            }
            let Some(id) = attack_id(o) else { continue };
            let stix = o.get("id").and_then(|s| s.as_str()).unwrap_or_default();
            by_stix.insert(stix.to_string(), id.clone());
            let tactics = o
                .get("kill_chain_phases")
                .and_then(|k| k.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.get("phase_name")?.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let s = |k: &str| {
                o.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let b = |k: &str| o.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
            let parent = if b("x_mitre_is_subtechnique") {
                id.split('.').next().map(str::to_string)
            } else {
                None
            };
            techniques.insert(
                id.clone(),
                Technique {
                    id,
                    name: s("name"),
                    description: s("description"),
                    tactics,
                    parent,
                    revoked: b("revoked"),
                    deprecated: b("x_mitre_deprecated"),
                    revoked_by: None,
                },
            );
        }
        for o in objects {
            if o.get("type").and_then(|t| t.as_str()) != Some("relationship") {
                continue;
            }
            let rel = o.get("relationship_type").and_then(|s| s.as_str());
            let src = o.get("source_ref").and_then(|s| s.as_str()).unwrap_or("");
            let dst = o.get("target_ref").and_then(|s| s.as_str()).unwrap_or("");
            let (Some(src), Some(dst)) = (by_stix.get(src), by_stix.get(dst)) else {
                continue;
            };
            match rel {
                Some("revoked-by") => {
                    if let Some(t) = techniques.get_mut(src) {
                        t.revoked_by = Some(dst.clone());
                    }
                }
                Some("subtechnique-of") => {
                    if let Some(t) = techniques.get_mut(src) {
                        t.parent = Some(dst.clone());
                    }
                }
                _ => {}
            }
        }
        if techniques.is_empty() {
            return Err(Error::data(
                "the bundle holds no ATT&CK attack-pattern objects; is this a STIX bundle from mitre/cti?",
            ));
        }
        Ok(Self { techniques })
    }

    /// Follow the revoked-by chain to the technique that stands today (cycle-safe).
    pub fn resolve(&self, id: &str) -> String {
        let mut cur = id.to_string();
        for _ in 0..16 {
            match self.techniques.get(&cur).and_then(|t| t.revoked_by.clone()) {
                Some(next) => cur = next,
                None => break,
            }
        }
        cur
    }

    pub fn get(&self, id: &str) -> Option<&Technique> {
        self.techniques.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_bundle() -> std::path::PathBuf {
        let p =
            crate::data::default_data_dir().join("attack/enterprise-attack-techniques-18.1.json");
        assert!(
            p.is_file(),
            "test data {} not found: set SYNTHCTI_DATA_DIR",
            p.display()
        );
        p
    }

    #[test]
    fn parses_the_real_bundle() {
        let p = shared_bundle();
        let c = Catalog::load(&p).unwrap();
        assert_eq!(c.techniques.len(), 835);
        let t = c.get("T1003.001").unwrap();
        assert_eq!(t.name, "LSASS Memory");
        assert_eq!(t.parent.as_deref(), Some("T1003"));
        assert_eq!(t.tactics, vec!["credential-access"]);
        // The data README: T1574.002 is revoked in v18.1 in favour of T1574.001.
        assert_eq!(c.resolve("T1574.002"), "T1574.001");
        assert_eq!(c.resolve("T1059"), "T1059");
        let active = c
            .techniques
            .values()
            .filter(|t| !t.revoked && !t.deprecated)
            .count();
        assert_eq!(active, 691);
    }

    #[test]
    fn revoked_chain_is_followed() {
        let objs: Vec<serde_json::Value> = serde_json::from_str(
            r#"[
            {"type":"attack-pattern","id":"a","name":"A","revoked":true,"external_references":[{"source_name":"mitre-attack","external_id":"T1"}]},
            {"type":"attack-pattern","id":"b","name":"B","revoked":true,"external_references":[{"source_name":"mitre-attack","external_id":"T2"}]},
            {"type":"attack-pattern","id":"c","name":"C","external_references":[{"source_name":"mitre-attack","external_id":"T3"}]},
            {"type":"relationship","relationship_type":"revoked-by","source_ref":"a","target_ref":"b"},
            {"type":"relationship","relationship_type":"revoked-by","source_ref":"b","target_ref":"c"}
        ]"#,
        )
        .unwrap();
        let c = Catalog::from_objects(&objs).unwrap();
        assert_eq!(c.resolve("T1"), "T3");
        assert_eq!(c.resolve("T9"), "T9");
    }
}
