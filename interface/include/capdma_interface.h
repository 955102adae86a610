/*
 * capdma_interface.h - the capdma bus <-> child contract for C consumers.
 *
 * The same contract as the Rust crate capdma-interface (interface/src/).
 * The CAPDMA_CHECK_* lines state every size and offset (x64); the test
 * interface/tests/c_header.rs compares them with the Rust layout and
 * compiles this header, so the two cannot drift apart.
 *
 * Include after wdm.h (or ntddk.h): it uses INTERFACE, GUID, NTSTATUS.
 */
#ifndef CAPDMA_INTERFACE_H
#define CAPDMA_INTERFACE_H

#ifdef __cplusplus
extern "C" {
#endif

/* {849a90bb-b660-4808-b559-65e0a2d54c96} */
#define CAPDMA_BUS_INTERFACE_GUID_INIT \
    { 0x849a90bb, 0xb660, 0x4808, { 0xb5, 0x59, 0x65, 0xe0, 0xa2, 0xd5, 0x4c, 0x96 } }

#define CAPDMA_BUS_INTERFACE_VERSION 2

/* DmaMode (CAPDMA_DMA_CONFIG.Mode) */
#define CAPDMA_DMA_MODE_SCATTER_GATHER 1
#define CAPDMA_DMA_MODE_COMMON_BUFFER  2

/* CAPDMA_COMPLETION.Kind */
#define CAPDMA_COMPLETION_FRAME 1
#define CAPDMA_COMPLETION_SLOT  2
#define CAPDMA_COMPLETION_FRAME_PART 3  /* version 2 */

/* ProgramFramePart Flags (version 2) */
#define CAPDMA_PART_START 0x1
#define CAPDMA_PART_END   0x2

/* CAPDMA_SG_DESCRIPTOR.Flags */
#define CAPDMA_DESC_START_OF_FRAME 0x1
#define CAPDMA_DESC_END_OF_FRAME   0x2
#define CAPDMA_DESC_END_OF_PART    0x4

/* CAPDMA_COMPLETION_RECORD.Status */
#define CAPDMA_CQ_STATUS_OK    0
#define CAPDMA_CQ_STATUS_ERROR 1
#define CAPDMA_CQ_STATUS_PART  2

typedef struct _CAPDMA_DMA_CONFIG {
    ULONG Mode;            /* CAPDMA_DMA_MODE_* */
    ULONG Reason;          /* ModeReason */
    ULONG Alignment;       /* bytes, power of two */
    ULONG MaxTransfer;     /* bytes per S/G element */
    ULONG AddressBits;     /* 32 or 64 */
    ULONG SlotCount;       /* common-buffer mode, 1..=CAPDMA_MAX_RING_SLOTS */
    ULONG SlotBytes;       /* common-buffer mode */
    ULONG DescriptorCount; /* S/G mode */
    ULONG ChannelCount;
    ULONG MaxFrameBytes;
} CAPDMA_DMA_CONFIG, *PCAPDMA_DMA_CONFIG;

/* Layout-identical to KSMAPPING. */
typedef struct _CAPDMA_SG_ELEMENT {
    ULONGLONG LogicalAddress;
    ULONG ByteCount;
    ULONG Alignment;
} CAPDMA_SG_ELEMENT, *PCAPDMA_SG_ELEMENT;

/* The most slots a common-buffer ring has (SlotCount): the bus configures no
   more, the child refuses more. */
#define CAPDMA_MAX_RING_SLOTS 32

typedef struct _CAPDMA_SLOT_RING {
    PUCHAR Base;           /* kernel VA of slot 0 */
    ULONGLONG BaseLogical; /* logical address of slot 0 */
    ULONG SlotCount;
    ULONG SlotStride;      /* bytes between slots */
    ULONG SlotBytes;       /* usable bytes per slot */
    ULONG LinePitch;       /* bytes between lines, 0 while stopped */
} CAPDMA_SLOT_RING, *PCAPDMA_SLOT_RING;

typedef struct _CAPDMA_CHANNEL_FORMAT {
    ULONG FourCC;
    ULONG Width;
    ULONG Height;
    ULONG Stride;          /* bytes; S/G mode */
    ULONG FrameInterval;   /* 100-ns units */
    ULONG Reserved;
} CAPDMA_CHANNEL_FORMAT, *PCAPDMA_CHANNEL_FORMAT;

typedef struct _CAPDMA_COMPLETION {
    ULONG Channel;
    ULONG Kind;            /* CAPDMA_COMPLETION_* */
    ULONG Tag;             /* S/G: frame tag; common buffer: slot index */
    ULONG BytesWritten;
    NTSTATUS Status;
    ULONG FrameNumber;
    LONGLONG Timestamp;    /* 100-ns units */
} CAPDMA_COMPLETION, *PCAPDMA_COMPLETION;

typedef NTSTATUS (__stdcall *PCAPDMA_GET_DMA_CONFIG)(PVOID Context, ULONG Channel, PCAPDMA_DMA_CONFIG Config);
typedef NTSTATUS (__stdcall *PCAPDMA_GET_DMA_ADAPTER)(PVOID Context, ULONG Channel, PVOID *Adapter,
                                                      PULONG MaxMappingByteCount, PULONG MapRegisters);
typedef NTSTATUS (__stdcall *PCAPDMA_PROGRAM_FRAME)(PVOID Context, ULONG Channel, ULONG Tag,
                                                    const CAPDMA_SG_ELEMENT *Elements, ULONG ElementCount);
typedef NTSTATUS (__stdcall *PCAPDMA_PROGRAM_FRAME_PART)(PVOID Context, ULONG Channel, ULONG Tag,
                                                         const CAPDMA_SG_ELEMENT *Elements, ULONG ElementCount,
                                                         ULONG Flags, PULONG Accepted);
typedef NTSTATUS (__stdcall *PCAPDMA_GET_SLOT_RING)(PVOID Context, ULONG Channel, PCAPDMA_SLOT_RING Ring);
typedef NTSTATUS (__stdcall *PCAPDMA_RETURN_SLOT)(PVOID Context, ULONG Channel, ULONG Slot);
typedef NTSTATUS (__stdcall *PCAPDMA_START_CHANNEL)(PVOID Context, ULONG Channel, const CAPDMA_CHANNEL_FORMAT *Format);
typedef NTSTATUS (__stdcall *PCAPDMA_STOP_CHANNEL)(PVOID Context, ULONG Channel);
typedef VOID (__stdcall *PCAPDMA_COMPLETION_ROUTINE)(PVOID CallbackContext, const CAPDMA_COMPLETION *Completion);
typedef NTSTATUS (__stdcall *PCAPDMA_REGISTER_COMPLETION)(PVOID Context, ULONG Channel,
                                                          PCAPDMA_COMPLETION_ROUTINE Callback, PVOID CallbackContext);

typedef struct _CAPDMA_BUS_INTERFACE {
    INTERFACE Header;      /* Size, Version, Context, InterfaceReference, InterfaceDereference */
    PCAPDMA_GET_DMA_CONFIG GetDmaConfig;
    PCAPDMA_GET_DMA_ADAPTER GetDmaAdapter;
    PCAPDMA_PROGRAM_FRAME ProgramFrame;
    PCAPDMA_GET_SLOT_RING GetSlotRing;
    PCAPDMA_RETURN_SLOT ReturnSlot;
    PCAPDMA_START_CHANNEL StartChannel;
    PCAPDMA_STOP_CHANNEL StopChannel;
    PCAPDMA_REGISTER_COMPLETION RegisterCompletion;
    PCAPDMA_PROGRAM_FRAME_PART ProgramFramePart;   /* version 2 */
} CAPDMA_BUS_INTERFACE, *PCAPDMA_BUS_INTERFACE;

/* The board's in-memory formats. */
typedef struct _CAPDMA_SG_DESCRIPTOR {
    ULONGLONG Address;
    ULONG ByteCount;
    ULONG Flags;
    ULONG Tag;
    ULONG Reserved0;
    ULONGLONG Reserved1;
} CAPDMA_SG_DESCRIPTOR;

typedef struct _CAPDMA_COMPLETION_RECORD {
    ULONG Index;
    ULONG ByteCount;
    ULONG Status;
    ULONG FrameNumber;
    ULONGLONG Timestamp;
    ULONG Tag;
    ULONG Reserved;
} CAPDMA_COMPLETION_RECORD;

/* Layout checks (x64). Format: CAPDMA_CHECK_SIZE(type, bytes) and
 * CAPDMA_CHECK_OFFSET(type, field, bytes); one per line. */
#define CAPDMA_CHECK_SIZE(t, n) _Static_assert(sizeof(t) == (n), #t " size")
#define CAPDMA_CHECK_OFFSET(t, f, n) _Static_assert(__builtin_offsetof(t, f) == (n), #t "." #f " offset")
#if defined(_WIN64) || defined(__x86_64__)
CAPDMA_CHECK_SIZE(CAPDMA_BUS_INTERFACE, 104);
CAPDMA_CHECK_OFFSET(CAPDMA_BUS_INTERFACE, GetDmaConfig, 32);
CAPDMA_CHECK_OFFSET(CAPDMA_BUS_INTERFACE, ProgramFrame, 48);
CAPDMA_CHECK_OFFSET(CAPDMA_BUS_INTERFACE, RegisterCompletion, 88);
CAPDMA_CHECK_OFFSET(CAPDMA_BUS_INTERFACE, ProgramFramePart, 96);
CAPDMA_CHECK_SIZE(CAPDMA_DMA_CONFIG, 40);
CAPDMA_CHECK_OFFSET(CAPDMA_DMA_CONFIG, SlotCount, 20);
CAPDMA_CHECK_OFFSET(CAPDMA_DMA_CONFIG, MaxFrameBytes, 36);
CAPDMA_CHECK_SIZE(CAPDMA_SG_ELEMENT, 16);
CAPDMA_CHECK_OFFSET(CAPDMA_SG_ELEMENT, ByteCount, 8);
CAPDMA_CHECK_SIZE(CAPDMA_SLOT_RING, 32);
CAPDMA_CHECK_OFFSET(CAPDMA_SLOT_RING, SlotCount, 16);
CAPDMA_CHECK_OFFSET(CAPDMA_SLOT_RING, LinePitch, 28);
CAPDMA_CHECK_SIZE(CAPDMA_CHANNEL_FORMAT, 24);
CAPDMA_CHECK_OFFSET(CAPDMA_CHANNEL_FORMAT, FrameInterval, 16);
CAPDMA_CHECK_SIZE(CAPDMA_COMPLETION, 32);
CAPDMA_CHECK_OFFSET(CAPDMA_COMPLETION, Status, 16);
CAPDMA_CHECK_OFFSET(CAPDMA_COMPLETION, Timestamp, 24);
CAPDMA_CHECK_SIZE(CAPDMA_SG_DESCRIPTOR, 32);
CAPDMA_CHECK_OFFSET(CAPDMA_SG_DESCRIPTOR, Tag, 16);
CAPDMA_CHECK_SIZE(CAPDMA_COMPLETION_RECORD, 32);
CAPDMA_CHECK_OFFSET(CAPDMA_COMPLETION_RECORD, Timestamp, 16);
CAPDMA_CHECK_OFFSET(CAPDMA_COMPLETION_RECORD, Tag, 24);
#endif

#ifdef __cplusplus
}
#endif

#endif /* CAPDMA_INTERFACE_H */
