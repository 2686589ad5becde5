//! The one integration-test binary; each module tests one part of the process contract.

mod validate;
