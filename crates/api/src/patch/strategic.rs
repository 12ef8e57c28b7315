//! Strategic merge patch: a JSON merge patch in which some lists are merged item by
//! item (matched by a merge key, or as sets of scalars), plus the directives kubectl
//! sends: `$patch`, `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>`. Element order follows the API server: the
//! `$setElementOrder` list first, then the order in the patch, then the stored order.

use serde_json::{Map, Value};

use super::PatchError;
use super::schema::{Field, ListStrategy, Ty};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

type Object = Map<String, Value>;

pub(super) fn apply(kind: &str, original: &Value, patch: Value) -> Result<Value, PatchError> {
    let Value::Object(original) = original else {
        return Err(PatchError::BadJsonDoc);
    };
    let Value::Object(patch) = patch else {
        return Err(PatchError::InvalidPatch(
            "a strategic merge patch must be a JSON object".to_owned(),
        ));
    };
    // A top-level `$patch: delete` leaves an empty object, as upstream does.
    let merged = merge_map(original.clone(), patch, Ty::root(kind))?.unwrap_or_default();
    Ok(Value::Object(merged))
}

/// Merges `patch` into `original`; `None` means the patch deleted the whole map.
fn merge_map(
    mut original: Object,
    mut patch: Object,
    ty: Ty,
) -> Result<Option<Object>, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        match directive.as_str() {
            // Replace: the patch's content alone, its own directives still resolved.
            Some("replace") => return merge_map(Object::new(), patch, ty),
            Some("delete") => return Ok(None),
            Some("merge") => {}
            _ => {
                patch.insert(DIRECTIVE.to_owned(), directive.clone());
                return Err(PatchError::UnknownDirective {
                    directive: go_fmt(&directive),
                    map: go_fmt(&Value::Object(patch)),
                });
            }
        }
    }
    retain_keys(&mut original, &mut patch)?;
    set_element_order(&mut original, &mut patch, ty)?;

    let mut deletions = Vec::new();
    for (key, value) in patch {
        if let Some(name) = key.strip_prefix(DELETE_PRIMITIVE) {
            // Applied after the merges so that additions to the same list come first.
            deletions.push((name.to_owned(), value));
            continue;
        }
        if key.starts_with('$') {
            // No API field starts with `$`: an unknown directive must not be stored.
            continue;
        }
        if value.is_null() {
            original.remove(&key);
            continue;
        }
        let field = ty.field(&key);
        let merged = match original.remove(&key) {
            Some(current) => merge_value(current, value, field)?,
            None => fresh(value, field)?,
        };
        if let Some(merged) = merged {
            original.insert(key, merged);
        }
    }
    for (name, values) in deletions {
        let Value::Array(values) = values else {
            return Err(PatchError::PrimitiveListFormat);
        };
        if let Some(Value::Array(current)) = original.get_mut(&name) {
            current.retain(|v| !values.contains(v));
        }
    }
    Ok(Some(original))
}

/// `$retainKeys`: drop every field of `original` that is not listed.
fn retain_keys(original: &mut Object, patch: &mut Object) -> Result<(), PatchError> {
    let Some(list) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = list else {
        return Err(PatchError::RetainKeysFormat);
    };
    let keep = list
        .iter()
        .map(|v| v.as_str().ok_or(PatchError::RetainKeysFormat))
        .collect::<Result<Vec<&str>, _>>()?;
    // Every field the patch sets must be one of the retained keys.
    let sets_other = patch.iter().any(|(k, v)| {
        !(v.is_null()
            || k.starts_with(DELETE_PRIMITIVE)
            || k.starts_with(SET_ORDER)
            || keep.contains(&k.as_str()))
    });
    if sets_other {
        return Err(PatchError::RetainKeysFormat);
    }
    original.retain(|k, _| keep.contains(&k.as_str()));
    Ok(())
}

/// `$setElementOrder/<field>`: merge the field's list now (the patch list is removed
/// from `patch`), then order the result by the directive.
fn set_element_order(original: &mut Object, patch: &mut Object, ty: Ty) -> Result<(), PatchError> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ORDER))
        .cloned()
        .collect();
    for directive in directives {
        let Some(order) = patch.remove(&directive) else {
            continue;
        };
        let name = &directive[SET_ORDER.len()..];
        let Value::Array(order) = order else {
            return Err(PatchError::SetElementOrderFormat);
        };
        let field = ty.field(name);
        let key = merge_key(field);
        let patch_list = match patch.remove(name) {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(other) => {
                // `null` or a non-list: nothing to order, the plain merge handles it.
                patch.insert(name.to_owned(), other);
                continue;
            }
        };
        let original_list = match original.get(name) {
            Some(Value::Array(list)) => Some(list.clone()),
            _ => None,
        };
        let order_ids = order
            .iter()
            .map(|item| {
                identity(item, key)
                    .cloned()
                    .ok_or_else(|| missing_key(item, key))
            })
            .collect::<Result<Vec<Value>, _>>()?;
        if let Some(list) = &patch_list {
            check_order(list, &order_ids, key, &order)?;
        }
        let server_ids = ids(original_list.as_deref().unwrap_or_default(), key);
        let merged = match (original_list, patch_list) {
            (None, None) => continue,
            (None, Some(list)) => merge_list(Vec::new(), list, field)?,
            (Some(list), None) => list,
            (Some(current), Some(list)) => merge_list(current, list, field)?,
        };
        let ordered = order_items(merged, &order_ids, &server_ids, key);
        original.insert(name.to_owned(), Value::Array(ordered));
    }
    Ok(())
}

/// The items of the patch list (deletions aside) must appear in the
/// `$setElementOrder` list, in the same relative order.
fn check_order(
    list: &[Value],
    order_ids: &[Value],
    key: Option<&str>,
    order: &[Value],
) -> Result<(), PatchError> {
    let mut remaining = order_ids.iter();
    for item in list {
        if key.is_some() && item.get(DIRECTIVE).is_some() {
            continue;
        }
        let id = identity(item, key).ok_or_else(|| missing_key(item, key))?;
        if !remaining.any(|o| o == id) {
            return Err(PatchError::Strategic(format!(
                "The order in patch list:\n{}\n doesn't match {SET_ORDER} list:\n{}\n",
                go_fmt(&Value::Array(list.to_vec())),
                go_fmt(&Value::Array(order.to_vec())),
            )));
        }
    }
    Ok(())
}

fn merge_key(field: Field) -> Option<&'static str> {
    match field.list {
        ListStrategy::Merge(key) => key,
        ListStrategy::Replace => None,
    }
}

/// Merges two values of field `field`; `None` means the patch deleted it.
fn merge_value(current: Value, patch: Value, field: Field) -> Result<Option<Value>, PatchError> {
    match (current, patch) {
        (Value::Object(current), Value::Object(patch)) => {
            Ok(merge_map(current, patch, field.ty)?.map(Value::Object))
        }
        (Value::Array(current), Value::Array(patch)) => {
            Ok(Some(Value::Array(merge_list(current, patch, field)?)))
        }
        // Scalars, and changes of type, take the patch value.
        (_, patch) => fresh(patch, field),
    }
}

/// A patch value with nothing to merge into: its directives are resolved against an
/// empty value, so no `$patch` or `null` ends up stored.
fn fresh(patch: Value, field: Field) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Object(patch) => Ok(merge_map(Object::new(), patch, field.ty)?.map(Value::Object)),
        Value::Array(patch) => Ok(Some(Value::Array(merge_list(Vec::new(), patch, field)?))),
        scalar => Ok(Some(scalar)),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Elements {
    Maps,
    Scalars,
}

/// Merges a list field according to its strategy.
fn merge_list(
    current: Vec<Value>,
    patch: Vec<Value>,
    field: Field,
) -> Result<Vec<Value>, PatchError> {
    let ListStrategy::Merge(key) = field.list else {
        let mut out = Vec::with_capacity(patch.len());
        for item in patch {
            out.extend(fresh(item, field)?);
        }
        return Ok(out);
    };
    if current.is_empty() && patch.is_empty() {
        return Ok(current);
    }
    match (element_kind(&current, &patch)?, key) {
        (Elements::Scalars, _) => Ok(merge_scalars(current, patch)),
        (Elements::Maps, Some(key)) => merge_keyed(current, patch, key, field),
        (Elements::Maps, None) => Err(PatchError::Strategic(
            "cannot merge lists without merge key".to_owned(),
        )),
    }
}

/// Upstream merges lists only when all items have the same JSON type.
fn element_kind(current: &[Value], patch: &[Value]) -> Result<Elements, PatchError> {
    let mut first: Option<&Value> = None;
    for item in current.iter().chain(patch) {
        match first {
            None => {
                if item.is_array() {
                    return Err(PatchError::ListOfLists);
                }
                first = Some(item);
            }
            Some(f) if std::mem::discriminant(f) != std::mem::discriminant(item) => {
                return Err(PatchError::Strategic(format!(
                    "list element types are not identical: [{} {}]",
                    go_fmt(&Value::Array(current.to_vec())),
                    go_fmt(&Value::Array(patch.to_vec())),
                )));
            }
            Some(_) => {}
        }
    }
    Ok(if first.is_some_and(Value::is_object) {
        Elements::Maps
    } else {
        Elements::Scalars
    })
}

/// Lists of scalars with the merge strategy (finalizers) are merged as sets.
fn merge_scalars(current: Vec<Value>, patch: Vec<Value>) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::with_capacity(current.len() + patch.len());
    for item in current.iter().chain(&patch) {
        if !merged.contains(item) {
            merged.push(item.clone());
        }
    }
    order_items(merged, &patch, &current, None)
}

/// Lists of maps matched by `key`: `$patch: delete` items remove, a `$patch: replace`
/// item makes the patch list replace the stored one, other items merge into the item
/// with the same key or are added.
fn merge_keyed(
    mut current: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    field: Field,
) -> Result<Vec<Value>, PatchError> {
    let mut items = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(mut item) = item else {
            continue; // element_kind made sure all items are maps
        };
        let Some(directive) = item.get(DIRECTIVE).cloned() else {
            items.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let id = item
                    .get(key)
                    .ok_or_else(|| missing_key(&Value::Object(item.clone()), Some(key)))?;
                current.retain(|c| c.get(key) != Some(id));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                item.remove(DIRECTIVE);
                if !item.is_empty() {
                    items.push(item);
                }
            }
            _ => {
                return Err(PatchError::UnknownDirective {
                    directive: go_fmt(&directive),
                    map: go_fmt(&Value::Object(item)),
                });
            }
        }
    }
    if replace {
        current.clear();
    }
    let server_ids = ids(&current, Some(key));
    let mut patch_ids = Vec::with_capacity(items.len());
    let mut merged = current;
    for item in items {
        let id = item
            .get(key)
            .cloned()
            .ok_or_else(|| missing_key(&Value::Object(item.clone()), Some(key)))?;
        let position = merged.iter().position(|c| c.get(key) == Some(&id));
        patch_ids.push(id);
        match position {
            Some(i) => {
                let existing = std::mem::take(&mut merged[i]);
                match merge_value(existing, Value::Object(item), field)? {
                    Some(v) => merged[i] = v,
                    None => {
                        merged.remove(i);
                    }
                }
            }
            None => merged.extend(fresh(Value::Object(item), field)?),
        }
    }
    Ok(order_items(merged, &patch_ids, &server_ids, Some(key)))
}

/// The identity of a list item: its merge key's value, or the item itself for scalars.
fn identity<'a>(item: &'a Value, key: Option<&str>) -> Option<&'a Value> {
    match key {
        Some(key) => item.get(key),
        None => Some(item),
    }
}

fn ids(items: &[Value], key: Option<&str>) -> Vec<Value> {
    items
        .iter()
        .filter_map(|item| identity(item, key).cloned())
        .collect()
}

fn missing_key(item: &Value, key: Option<&str>) -> PatchError {
    PatchError::MissingMergeKey {
        map: go_fmt(item),
        key: key.unwrap_or_default().to_owned(),
    }
}

/// Orders merged items: those named by `wanted` (the patch or `$setElementOrder`) in
/// that order, the others in the stored order, interleaved where the stored order
/// relates them.
fn order_items(
    merged: Vec<Value>,
    wanted: &[Value],
    server: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let position = |order: &[Value], item: &Value| {
        identity(item, key).and_then(|id| order.iter().position(|o| o == id))
    };
    let (mut from_patch, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| position(wanted, item).is_some());
    from_patch.sort_by_key(|item| position(wanted, item).unwrap_or(usize::MAX));
    server_only.sort_by_key(|item| position(server, item).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            // A stored-only item goes first only if the stored order puts it before
            // the next patch item.
            (Some(l), Some(r)) => matches!(
                (position(server, l), position(server, r)),
                (Some(a), Some(b)) if a < b
            ),
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
    out
}

/// A JSON value printed like Go's `%v` of the decoded `interface{}` (for messages).
pub(super) fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.as_f64().map(go_float).unwrap_or_else(|| n.to_string()),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_fmt).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(map) => {
            let mut parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_fmt(v)))
                .collect();
            parts.sort();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// Go's `%v` of a float64: shortest digits, exponent form below 1e-4 or from 1e6.
fn go_float(f: f64) -> String {
    let sci = format!("{f:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return sci;
    };
    if (-4..6).contains(&exp) {
        format!("{f}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}
