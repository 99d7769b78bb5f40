"""What training shares with the device: the bundle, preprocessing, decoding and the runtime."""
