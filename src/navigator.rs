//! ATT&CK Navigator layers (layer format 4.5, <https://github.com/mitre-attack/attack-navigator/blob/master/layers/LAYERFORMATv4_5.md>)
//! from `predict`'s document-level techniques.
//!
//! A technique that belongs to several tactics is written **once, without `tactic`**: the format
//! applies such an entry to every tactic the technique appears under, which is what a
//! sentence-level classifier knows (it predicts a technique, not the tactic it served). A
//! sub-technique brings an entry for its parent with `showSubtechniques: true` (and no score
//! unless the parent was predicted too) so the Navigator opens the parent and shows it.

use serde_json::{Value, json};

/// One technique of a layer: its ID (`T1059` or `T1059.001`), a score in [0, 1] and the
/// evidence shown as the cell's comment.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTechnique {
    pub id: String,
    pub score: f64,
    pub comment: String,
}

/// A layer named `name` over `techniques`: scores are written as 0–100 (rounded), the gradient
/// runs white (0) to red (100), `domain` is `enterprise-attack`. `attack_version` (such as `18`)
/// goes into `versions.attack` when known.
pub fn layer(
    name: &str,
    description: &str,
    attack_version: Option<&str>,
    techniques: &[LayerTechnique],
) -> Value {
    let mut entries: Vec<Value> = Vec::new();
    let mut parents_needed: Vec<String> = Vec::new();
    for t in techniques {
        if let Some((parent, _)) = t.id.split_once('.')
            && !parents_needed.iter().any(|p| p == parent)
        {
            parents_needed.push(parent.to_string());
        }
    }
    for t in techniques {
        let mut e = json!({
            "techniqueID": t.id,
            "score": (t.score.clamp(0.0, 1.0) * 100.0).round() as i64,
            "comment": t.comment,
            "enabled": true,
        });
        if parents_needed.contains(&t.id) {
            e["showSubtechniques"] = json!(true);
        }
        entries.push(e);
    }
    for p in parents_needed {
        if !techniques.iter().any(|t| t.id == p) {
            entries.push(json!({
                "techniqueID": p,
                "enabled": true,
                "showSubtechniques": true,
            }));
        }
    }
    let mut versions = json!({"layer": "4.5", "navigator": "5.1.0"});
    if let Some(v) = attack_version {
        versions["attack"] = json!(v);
    }
    json!({
        "name": name,
        "versions": versions,
        "domain": "enterprise-attack",
        "description": description,
        "sorting": 3,
        "hideDisabled": false,
        "techniques": entries,
        "gradient": {
            "colors": ["#ffffffff", "#ff6666ff"],
            "minValue": 0,
            "maxValue": 100,
        },
        "legendItems": [],
        "metadata": [],
        "links": [],
        "showTacticRowBackground": false,
        "selectTechniquesAcrossTactics": true,
        "selectSubtechniquesWithParent": false,
        "selectVisibleTechniques": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sub_technique_opens_its_parent_and_scores_are_percentages() {
        let l = layer(
            "r",
            "d",
            Some("18"),
            &[
                LayerTechnique {
                    id: "T1059.001".into(),
                    score: 0.876,
                    comment: "PowerShell".into(),
                },
                LayerTechnique {
                    id: "T1105".into(),
                    score: 0.4,
                    comment: "x".into(),
                },
            ],
        );
        assert_eq!(l["domain"], "enterprise-attack");
        assert_eq!(l["versions"]["layer"], "4.5");
        assert_eq!(l["versions"]["attack"], "18");
        let t = l["techniques"].as_array().unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0]["techniqueID"], "T1059.001");
        assert_eq!(t[0]["score"], 88);
        assert_eq!(t[0]["comment"], "PowerShell");
        assert!(t[0].get("tactic").is_none());
        assert_eq!(t[1]["score"], 40);
        assert_eq!(t[2]["techniqueID"], "T1059");
        assert_eq!(t[2]["showSubtechniques"], true);
        assert!(t[2].get("score").is_none());
    }

    #[test]
    fn a_predicted_parent_is_not_written_twice() {
        let l = layer(
            "r",
            "d",
            None,
            &[
                LayerTechnique {
                    id: "T1059".into(),
                    score: 0.5,
                    comment: String::new(),
                },
                LayerTechnique {
                    id: "T1059.003".into(),
                    score: 0.6,
                    comment: String::new(),
                },
            ],
        );
        let t = l["techniques"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["showSubtechniques"], true);
        assert_eq!(t[0]["score"], 50);
        assert!(l["versions"].get("attack").is_none());
    }
}
