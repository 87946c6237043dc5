"""SAM-style heads of the SAM 3 tracker (official package ``sam3.sam``): prompt encoder, two-way
transformer, mask decoder."""
