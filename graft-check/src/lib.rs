//! graft-check
