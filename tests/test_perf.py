"""The allocator setting that lrn train and lrn bench apply."""
import subprocess
import sys
import textwrap


def test_keep_freed_memory_applies_once_and_can_be_turned_off():
    code = textwrap.dedent("""
        from lrn_cli import perf
        assert not perf.applied()
        first = perf.keep_freed_memory()
        assert perf.keep_freed_memory() == first == perf.applied()
        print(first)
    """)
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"LRN_MALLOC": "0", "PATH": "/usr/bin:/bin"})
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    import platform

    assert on.stdout.strip() == str(platform.libc_ver()[0] == "glibc") and off.stdout.strip() == "False"
