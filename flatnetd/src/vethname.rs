//! Host veth names are a 32-bit hash of (container id, ifname)
//! ([`flatnet_wire::veth::host_ifname`]), so two attachments can, rarely,
//! get the same one. The plugin removes a leftover veth of that name before
//! wiring, which would then be another container's: flatnetd refuses the
//! second attachment instead, at allocation, naming the first.

use flatnet_wire::{AttachmentKey, Lease};

/// Refuse `new` when another attachment in `existing` has the same host
/// veth name under `name`.
pub fn check_unique(
    existing: &[Lease],
    new: &Lease,
    name: impl Fn(&AttachmentKey) -> String,
) -> Result<(), String> {
    let mine = name(&new.key);
    match existing
        .iter()
        .find(|l| l.key != new.key && name(&l.key) == mine)
    {
        Some(other) => Err(format!(
            "the host interface name {mine} of container {} ({}) is already the one of \
             container {} ({}): a name collision; recreate this container (a new \
             container id gives a new name)",
            new.key.container_id, new.key.ifname, other.key.container_id, other.key.ifname
        )),
        None => Ok(()),
    }
}

/// The real naming.
pub fn host_ifname(k: &AttachmentKey) -> String {
    flatnet_wire::veth::host_ifname(&k.container_id, &k.ifname)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(cid: &str) -> Lease {
        Lease {
            created: 1,
            ..crate::test_lease(cid, "10.87.1.2")
        }
    }

    #[test]
    fn a_colliding_name_is_refused_with_the_owner_named() {
        let first = |_: &AttachmentKey| "fn00000001".to_string();
        let e = check_unique(&[lease("a")], &lease("b"), first).unwrap_err();
        assert!(e.contains("fn00000001") && e.contains("container a"), "{e}");
        // Its own earlier lease is no collision.
        assert!(check_unique(&[lease("b")], &lease("b"), first).is_ok());
        // The real names of these two ids do collide (found by search).
        assert_eq!(
            host_ifname(&lease("cid-88276").key),
            host_ifname(&lease("cid-128754").key)
        );
        assert!(check_unique(&[lease("cid-88276")], &lease("cid-128754"), host_ifname).is_err());
        assert!(check_unique(&[lease("cid-1")], &lease("cid-2"), host_ifname).is_ok());
    }
}
