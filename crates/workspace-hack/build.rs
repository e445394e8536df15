//! Build script: present only so that cargo unifies the features of this
//! crate's build dependencies with the workspace's.

fn main() {}
