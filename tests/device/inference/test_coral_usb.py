"""Which USB port the Coral sits on, read from a fake sysfs tree laid out as the kernel does."""

from inference.fake_edgetpu import add_usb_device

from device.inference.coral_usb import coral_usb_speed_mbps, coral_usb_speeds


def test_a_coral_on_usb2_and_one_on_usb3_by_both_ids(tmp_path):
    add_usb_device(tmp_path, "usb1", "1d6b", "0002", "480")  # a root hub, not a Coral
    add_usb_device(tmp_path, "1-1.2", "046d", "0825", "480")  # a webcam
    add_usb_device(tmp_path, "1-1.3", "18d1", "9302", "480")  # Coral, firmware loaded
    add_usb_device(tmp_path, "2-1", "1A6E", "089A", "5000")  # Coral, bootloader (upper case)
    assert coral_usb_speeds(tmp_path) == {"1-1.3": 480, "2-1": 5000}
    assert coral_usb_speed_mbps(tmp_path) == 480  # the slowest one is the one to warn about


def test_usb3_only(tmp_path):
    add_usb_device(tmp_path, "2-1", "18d1", "9302", "5000")
    add_usb_device(tmp_path, "4-1", "18d1", "9302", "10000")
    assert coral_usb_speed_mbps(tmp_path) == 5000


def test_no_coral_no_sysfs_and_unreadable_speed(tmp_path):
    assert coral_usb_speed_mbps(tmp_path / "nothing") is None
    add_usb_device(tmp_path, "1-1", "046d", "0825", "480")
    assert coral_usb_speed_mbps(tmp_path) is None
    broken = add_usb_device(tmp_path, "1-2", "18d1", "9302", "")
    (broken / "speed").write_text("unknown\n")
    assert coral_usb_speeds(tmp_path) == {}
