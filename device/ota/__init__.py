"""Model updates over MQTT: ``kestrel push`` on one side, the daemon's receiver on the other.

A bundle folder is packed into one tar (:mod:`~device.ota.archive`), cut into hashed chunks
(:mod:`~device.ota.protocol`), optionally signed with Ed25519 (:mod:`~device.ota.signing`) and
published with QoS 1 to ``<prefix>/model/set`` or ``<topic_prefix>/group/<g>/model/set``
(:mod:`~device.ota.push`). The daemon (:mod:`~device.ota.service`) assembles the chunks
(:mod:`~device.ota.receiver`), unpacks and checks the bundle as start-up does, smoke-tests it
on the camera's latest frames (:mod:`~device.ota.verify`), swaps it in between two frames
(:mod:`~device.ota.swap`) and keeps it, with the one before it, in ``state_dir/models``
(:mod:`~device.ota.store`). Every step reports on the retained ``<prefix>/model`` status.
"""
