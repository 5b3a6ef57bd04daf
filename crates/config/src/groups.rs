//! Nested group resolution: a user belongs to every group that reaches it through `members`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::manifests::MemberKind;

pub(crate) struct GroupDef {
    /// `spec.name`, the value in the `groups` claim.
    pub name: String,
    pub members: Vec<(MemberKind, String)>,
}

/// For each user name, the sorted set of groups it belongs to, directly or through nesting.
/// Cycles are tolerated (each group is visited once); they are reported by [`find_cycle`].
pub(crate) fn resolve(groups: &[GroupDef]) -> BTreeMap<String, BTreeSet<String>> {
    // child group name -> parent group names
    let mut parents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut direct: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for g in groups {
        for (kind, member) in &g.members {
            match kind {
                MemberKind::Group => parents.entry(member).or_default().push(&g.name),
                MemberKind::User => direct.entry(member).or_default().push(&g.name),
            }
        }
    }
    let mut out = BTreeMap::new();
    for (user, first) in direct {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut queue: VecDeque<&str> = first.into_iter().collect();
        while let Some(g) = queue.pop_front() {
            if seen.insert(g.to_owned()) {
                queue.extend(parents.get(g).into_iter().flatten().copied());
            }
        }
        out.insert(user.to_owned(), seen);
    }
    out
}

/// A cycle among groups, as the path `a -> b -> a`, if there is one.
pub(crate) fn find_cycle(groups: &[GroupDef]) -> Option<String> {
    let children: BTreeMap<&str, Vec<&str>> = groups
        .iter()
        .map(|g| {
            let kids = g
                .members
                .iter()
                .filter(|(k, _)| *k == MemberKind::Group)
                .map(|(_, n)| n.as_str())
                .collect();
            (g.name.as_str(), kids)
        })
        .collect();
    // Iterative DFS with colours: 1 = on the current path, 2 = done.
    let mut colour: BTreeMap<&str, u8> = BTreeMap::new();
    for start in children.keys() {
        if colour.contains_key(start) {
            continue;
        }
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        colour.insert(start, 1);
        while let Some((node, next)) = path.last().copied() {
            let kids = children.get(node).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(kid) = kids.get(next) {
                if let Some(last) = path.last_mut() {
                    last.1 += 1;
                }
                match colour.get(kid) {
                    Some(1) => {
                        let from = path.iter().position(|(n, _)| n == kid).unwrap_or(0);
                        let mut names: Vec<&str> = path[from..].iter().map(|(n, _)| *n).collect();
                        names.push(kid);
                        return Some(names.join(" -> "));
                    }
                    Some(_) => {}
                    None => {
                        colour.insert(kid, 1);
                        path.push((kid, 0));
                    }
                }
            } else {
                colour.insert(node, 2);
                path.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str, members: &[(MemberKind, &str)]) -> GroupDef {
        GroupDef {
            name: name.into(),
            members: members.iter().map(|(k, n)| (*k, n.to_string())).collect(),
        }
    }

    #[test]
    fn nested_groups_reach_users() {
        let groups = [
            g("devs", &[(MemberKind::User, "jane")]),
            g(
                "engineering",
                &[(MemberKind::Group, "devs"), (MemberKind::User, "bob")],
            ),
            g("everyone", &[(MemberKind::Group, "engineering")]),
        ];
        let r = resolve(&groups);
        let jane: Vec<_> = r["jane"].iter().cloned().collect();
        assert_eq!(jane, ["devs", "engineering", "everyone"]);
        let bob: Vec<_> = r["bob"].iter().cloned().collect();
        assert_eq!(bob, ["engineering", "everyone"]);
        assert_eq!(find_cycle(&groups), None);
    }

    #[test]
    fn cycles_terminate_and_are_found() {
        let groups = [
            g("a", &[(MemberKind::Group, "b"), (MemberKind::User, "jane")]),
            g("b", &[(MemberKind::Group, "c")]),
            g("c", &[(MemberKind::Group, "a")]),
        ];
        let r = resolve(&groups);
        assert_eq!(r["jane"].len(), 3);
        assert_eq!(find_cycle(&groups).as_deref(), Some("a -> b -> c -> a"));
    }
}
