#!/usr/bin/env python3
"""Recompute the ICRC of every RoCEv2 packet in a pcap with scapy's RoCE
layer (an implementation independent of ours) and compare it with the wire.

Usage: check_icrc.py FILE.pcap
Prints 'checked=N mismatched=M' and, per opcode, how many packets were seen;
exits 1 if any ICRC differs or no RoCE packet was found."""
import sys
from collections import Counter

from scapy.all import rdpcap, raw
from scapy.contrib.roce import BTH

pkts = rdpcap(sys.argv[1])
checked = mismatched = 0
opcodes = Counter()
for p in pkts:
    if BTH not in p:
        continue
    bth = p[BTH]
    want = raw(p)[-4:]
    got = bth.compute_icrc(None)
    checked += 1
    opcodes[bth.opcode] += 1
    if got != want:
        mismatched += 1
        if mismatched <= 5:
            print(f"mismatch: opcode={bth.opcode:#04x} psn={bth.psn} wire={want.hex()} scapy={got.hex()}")
print(" ".join(f"{op:#04x}={n}" for op, n in sorted(opcodes.items())))
print(f"checked={checked} mismatched={mismatched}")
sys.exit(0 if checked > 0 and mismatched == 0 else 1)
