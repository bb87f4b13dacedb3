//! MemStorage against the storage conformance suite.

use graft_core::MemStorage;

#[test]
fn mem_storage_conforms() {
    graft_core::storage_suite::run(MemStorage::new_with_conf);
}
