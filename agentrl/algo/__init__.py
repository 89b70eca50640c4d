"""Pure algorithm maths: no I/O, no scheduling."""
