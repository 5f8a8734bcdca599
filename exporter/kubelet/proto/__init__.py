"""Generated stubs of the kubelet pod-resources API (v1).

See api.proto and tools/gen_podresources.sh.
"""
