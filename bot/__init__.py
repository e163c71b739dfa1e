"""patronbot core."""
