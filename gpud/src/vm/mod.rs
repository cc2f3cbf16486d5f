//! GPU virtual address spaces: the VA tree, the split/merge planner, vm_bo bookkeeping with
//! the extobj and evict lists.
