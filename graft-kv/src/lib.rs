//! graft-kv
