//! The one integration-test binary; each module tests one part of veo-batch.

mod sim;
