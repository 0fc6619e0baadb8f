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
    /// `x_mitre_domains`: `enterprise-attack`, `mobile-attack`, `ics-attack` (empty if unsaid).
    #[serde(default)]
    pub domains: Vec<String>,
}

/// Where a technique ID stands in the catalog, once mapped through `revoked-by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// A current technique of the catalog's domain.
    Active,
    /// Marked `x_mitre_deprecated`.
    Deprecated,
    /// Revoked, with no `revoked-by` successor in the bundle.
    RevokedWithoutSuccessor,
    /// In the bundle, but of other ATT&CK domains only (the domains named).
    OtherDomain(Vec<String>),
    /// Not in the bundle at all.
    Absent,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    pub techniques: BTreeMap<String, Technique>,
    /// The domain most of its techniques belong to (`enterprise-attack` for enterprise-attack.json).
    #[serde(default)]
    pub domain: Option<String>,
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
                    domains: o
                        .get("x_mitre_domains")
                        .and_then(|d| d.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|d| d.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
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
        let mut by_domain: BTreeMap<&str, usize> = BTreeMap::new();
        for t in techniques.values() {
            for d in &t.domains {
                *by_domain.entry(d.as_str()).or_insert(0) += 1;
            }
        }
        let domain = by_domain
            .iter()
            .max_by_key(|(d, n)| (**n, std::cmp::Reverse(**d)))
            .map(|(d, _)| d.to_string());
        Ok(Self { techniques, domain })
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

    /// Where `id` stands once mapped through `revoked-by` (pass it mapped or not).
    pub fn standing(&self, id: &str) -> Standing {
        let Some(t) = self.techniques.get(&self.resolve(id)) else {
            return Standing::Absent;
        };
        if t.revoked {
            return Standing::RevokedWithoutSuccessor;
        }
        if t.deprecated {
            return Standing::Deprecated;
        }
        match &self.domain {
            Some(d) if !t.domains.is_empty() && !t.domains.contains(d) => {
                Standing::OtherDomain(t.domains.clone())
            }
            _ => Standing::Active,
        }
    }

    /// The catalog's domain in words: `enterprise` for `enterprise-attack`, `ATT&CK` if unknown.
    pub fn domain_name(&self) -> &str {
        match &self.domain {
            Some(d) => d.strip_suffix("-attack").unwrap_or(d),
            None => "ATT&CK",
        }
    }

    /// Why a technique that is not [`Standing::Active`] is not, in words, for reports and errors.
    pub fn why(&self, standing: &Standing) -> String {
        match standing {
            Standing::Active => "a current technique".into(),
            Standing::Deprecated => "deprecated in ATT&CK".into(),
            Standing::RevokedWithoutSuccessor => {
                "revoked in ATT&CK with no successor to map it to".into()
            }
            Standing::OtherDomain(d) => format!(
                "a technique of {}, not of the {} catalog",
                d.join(", "),
                self.domain_name()
            ),
            Standing::Absent => format!(
                "not in the {} catalog (another domain?)",
                self.domain_name()
            ),
        }
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
    fn standing_of_ids_in_the_real_bundle() {
        let c = Catalog::load(&shared_bundle()).unwrap();
        assert_eq!(c.domain.as_deref(), Some("enterprise-attack"));
        assert_eq!(c.standing("T1059.001"), Standing::Active);
        // Revoked with a successor: stands as the successor.
        assert_eq!(c.standing("T1574.002"), Standing::Active);
        assert_eq!(c.standing("T1064"), Standing::Deprecated);
        // A Mobile ID (CTI-to-MITRE's dataset_tram.csv has it by a name clash).
        assert_eq!(c.standing("T1521"), Standing::Absent);
        assert_eq!(
            c.why(&Standing::Absent),
            "not in the enterprise catalog (another domain?)"
        );
    }

    #[test]
    fn standing_of_revoked_and_other_domain_ids() {
        let objs: Vec<serde_json::Value> = serde_json::from_str(
            r#"[
            {"type":"attack-pattern","id":"a","name":"A","x_mitre_domains":["enterprise-attack"],"external_references":[{"source_name":"mitre-attack","external_id":"T1001"}]},
            {"type":"attack-pattern","id":"b","name":"B","x_mitre_domains":["enterprise-attack"],"revoked":true,"external_references":[{"source_name":"mitre-attack","external_id":"T1002"}]},
            {"type":"attack-pattern","id":"c","name":"C","x_mitre_domains":["mobile-attack"],"external_references":[{"source_name":"mitre-attack","external_id":"T1521"}]},
            {"type":"attack-pattern","id":"d","name":"D","x_mitre_domains":["enterprise-attack"],"x_mitre_deprecated":true,"external_references":[{"source_name":"mitre-attack","external_id":"T1003"}]}
        ]"#,
        )
        .unwrap();
        let c = Catalog::from_objects(&objs).unwrap();
        assert_eq!(c.domain.as_deref(), Some("enterprise-attack"));
        assert_eq!(c.standing("T1001"), Standing::Active);
        assert_eq!(c.standing("T1002"), Standing::RevokedWithoutSuccessor);
        assert_eq!(c.standing("T1003"), Standing::Deprecated);
        let other = c.standing("T1521");
        assert_eq!(other, Standing::OtherDomain(vec!["mobile-attack".into()]));
        assert_eq!(
            c.why(&other),
            "a technique of mobile-attack, not of the enterprise catalog"
        );
        assert_eq!(c.standing("T9999"), Standing::Absent);
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
